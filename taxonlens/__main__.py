from taxonlens.cli import main

main()
