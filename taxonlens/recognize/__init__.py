"""Recognition: classifiers that turn features into scores over a taxonomy's leaves."""
