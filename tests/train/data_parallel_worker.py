"""One process of a data-parallel test run (``tests/train/test_parallel.py`` starts two, with the
environment ``accelerate launch`` would set: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...).

``python data_parallel_worker.py JOBS.json``: runs the jobs in order; each is
``{"trainer": "contrastive" | "sft", "out": folder, "resume": bool}`` with optionally ``"kill_at":
step`` (this process kills itself with SIGKILL right after that step, as a crash would) or
``"nest_at": step, "nested": job`` (the nested job runs right after that step, so one kill leaves
two runs cut mid-run). Every step's loss goes to ``OUT.steps.jsonl`` (main process). The data and settings are :func:`contrastive_run`
and :func:`sft_run`, which the test's one-process runs use too.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from taxonlens.data.vqa_build import build_vqa
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.train.contrastive import ContrastiveConfig, synthworld_examples, train_contrastive
from taxonlens.train.sft import SFTConfig, train_sft


def contrastive_run(out: str | Path, resume: bool = False, progress=None, **settings):
    """tiny-clip on 6 species x 4 photos at 32 px: 2 epochs of 3 steps at a global batch of 8,
    a checkpoint every 2 steps (``settings`` replace the configuration's)."""
    world = SynthWorld.create(random_taxonomy(6, seed=0), 6, 4, novel_fraction=0, size=32, seed=0)
    config = ContrastiveConfig(**{"out": str(out), "epochs": 2, "batch_size": 8, "lr": 1e-3, "text_type": "mixed",
                                  "threads": 1, "checkpoint_every": 2, "eval_every": 0, **settings})
    return train_contrastive(config, synthworld_examples(world, None), resume=resume, progress=progress)


def sft_run(out: str | Path, resume: bool = False, progress=None, **settings):
    """tiny-qwen2.5-vl with LoRA on 6 species x 2 photos, one level per record and epoch answered by
    name (answers of different token counts): 12 questions, 2 epochs of batches of 5, 5 and 2 (two
    processes: shares of 2 and 3, then 1 and 1), a checkpoint every 2 steps."""
    world = SynthWorld.create(random_taxonomy(6, seed=0), 6, 2, novel_fraction=0, size=32, seed=0, nuisance=0.2)
    records = build_vqa(world.records(None), world.taxonomy, 4, "random", seed=0)
    config = SFTConfig(**{"out": str(out), "epochs": 2, "batch_size": 5, "lr": 2e-3, "lora_alpha": 32,
                          "lora_targets": "language+head", "questions_per_record": 1, "answer": "name",
                          "system": False, "threads": 1, "checkpoint_every": 2, "eval_every": 0, **settings})
    return train_sft(config, records, world.image_source(), world.taxonomy.ranks, resume=resume, progress=progress)


RUNS = {"contrastive": contrastive_run, "sft": sft_run}


def run_job(job: dict) -> None:
    """Train one job; at step ``nest_at`` it runs the job ``nested`` inside (both runs then stand
    mid-run), and at step ``kill_at`` this process dies."""
    main_process = os.environ["RANK"] == "0"
    steps = Path(f"{job['out']}.steps.jsonl")

    def progress(log) -> None:
        if main_process:
            with open(steps, "a") as f:
                f.write(json.dumps({"step": log.step, "loss": log.loss}) + "\n")
        if log.step == job.get("nest_at"):
            run_job(job["nested"])
        if log.step == job.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)

    RUNS[job["trainer"]](job["out"], job.get("resume", False), progress)


def main(jobs_file: str) -> None:
    for job in json.loads(Path(jobs_file).read_text()):
        run_job(job)


if __name__ == "__main__":
    main(sys.argv[1])
