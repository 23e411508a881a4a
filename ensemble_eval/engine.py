"""The evaluation engine: one loop for every command, and a run's whole lifecycle.

    evaluate_batches   the one loop: batches -> progress after every batch -> saves by images
                       or by time; sharded over torchrun processes
    evaluate           in memory (validate --data, the benchmark, tests): a thin use of the loop
    run_evaluation     the main command: lock, plan, progress store, loop, assembly of the
                       final files, analysis, report

Each step of the loop, every process evaluates its next batch (or none, at the end of a
shorter share), then one small all-reduce carries the world's progress (images, skipped,
top-1/top-5 hits) and rank 0's decision to save. On a save, the finished batches go to rank 0,
which alone writes them. So the bar moves after every batch, rank 0 shows the whole world's
count, and a kill loses at most `save_every` images per process or `save_interval` seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import distributed as D
from .config import DEFAULT_SAVE_EVERY, DEFAULT_SAVE_INTERVAL
from .data import DataError, Sample
from .ensemble import Accumulator, BatchResult, EvalResult, NonFiniteOutputs, Plan, run_batches
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SKIPPED, stop_signals
from .execution import Execution
from .members.inspection import Member
from .views import Geometries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saving:
    """Where the loop hands finished batches (`save`, on rank 0), and how often."""

    save: Callable[[list[BatchResult]], None]
    every_images: int = DEFAULT_SAVE_EVERY  # per process
    interval: float = DEFAULT_SAVE_INTERVAL  # seconds
    strict_hint: str = ""  # added to the message of an undecodable image under --strict


def progress_bar(total: int, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="img",
        disable=not enabled,
        dynamic_ncols=True,
        desc="evaluating",
        smoothing=0.1,
        mininterval=0,  # every batch: at 144 crops on a CPU that is one image every few seconds
        miniters=1,
    )


class Progress:
    """The bar and the world's running counts (rank 0 shows them)."""

    def __init__(
        self,
        total: int,
        enabled: bool,
        crops_per_image: int,
        num_members: int,
        done: tuple[int, int, int, int] = (0, 0, 0, 0),
    ):
        """`done`: (images, skipped, top-1 hits, top-5 hits) of the earlier sessions of a resumed run:
        the bar starts there and its running errors cover the whole run."""
        images, skipped, top1, top5 = done
        self.bar = progress_bar(total, enabled, images + skipped)
        self.enabled = enabled
        self.forward_passes = crops_per_image * num_members
        self.session_images = 0  # for the rate: this session's images over this session's time
        self.images, self.top1, self.top5 = images, top1, top5
        self.start = time.perf_counter()

    def add(self, images: int, skipped: int, top1: int, top5: int) -> None:
        self.session_images += images
        self.images += images
        self.top1 += top1
        self.top5 += top5
        if self.enabled and self.images:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix(
                {
                    "crops/s": f"{self.session_images * self.forward_passes / elapsed:.1f}",
                    "top1_err": f"{100 * (1 - self.top1 / self.images):.2f}%",
                    "top5_err": f"{100 * (1 - self.top5 / self.images):.2f}%",
                },
                refresh=False,
            )
        self.bar.update(images + skipped)

    def close(self) -> None:
        self.bar.close()


def evaluate_batches(
    samples: list[Sample],
    plan: Plan,
    members: list[Member],
    todo: list[int],
    *,
    saving: Saving,
    execution: Execution,
    progress: Progress,
) -> None:
    """Evaluate the global batches `todo` (sharded over `execution.world`), handing finished
    ones to `saving.save` on rank 0 (every `saving.every_images` images per process, every
    `saving.interval` seconds, and at the end).

    `execution.strict`: an undecodable image stops the loop with a DataError once the clean
    batches before it are saved (a batch holding it is not saved, so it is redone after a fix).
    """
    world, strict = execution.world, execution.strict
    mine = D.shard(todo, world)
    steps = math.ceil(len(todo) / world.world_size)  # the same on every process
    set_index = plan.set_names.index(plan.requested_set)
    batches = run_batches(samples, mine, plan, members, execution)
    pending: list[BatchResult] = []
    failure = None  # (kind, text) of the first problem that stops the run: "data" (--strict) or "nonfinite"
    since_save = 0  # the world's images since the last save (rank 0's count)
    last_save = time.monotonic()
    try:
        for step in range(steps):
            result = next(batches, None) if step < len(mine) else None
            counts = [0, 0, 0, 0]
            if result is not None and result.problem is not None:
                failure = failure or ("nonfinite", result.problem)
            elif result is not None:
                hits = result.hits[:, -1, set_index]  # the ensemble, requested set: [B, 2]
                counts = [int(result.indices.shape[0]), len(result.failures), *(int(v) for v in hits.sum(axis=0))]
                if strict and result.failures and failure is None:
                    position, reason = result.failures[0]
                    failure = ("data", f"{samples[position].rel_path}: {reason}")
                elif failure is None:
                    pending.append(result)
            due = since_save + counts[0] + counts[1] >= saving.every_images * world.world_size
            due = due or time.monotonic() - last_save >= saving.interval
            flags = [int(world.is_main and due), int(failure is not None)]
            world_counts = D.all_reduce_sum(counts + flags, world, execution.device)
            images, skipped, top1, top5, save_now, stop = world_counts
            if world.is_main:
                progress.add(images, skipped, top1, top5)
            since_save += images + skipped
            if save_now or stop or step == steps - 1:
                gathered = D.gather_to_main((pending, failure), world)
                stopped = None
                if world.is_main:
                    saving.save([r for part, _ in gathered for r in part])
                    stopped = next((f for _, f in gathered if f), None)
                pending, since_save, last_save = [], 0, time.monotonic()
                if stop:
                    _raise_failure(D.broadcast_from_main(stopped, world), saving.strict_hint)
    except KeyboardInterrupt:
        if world.world_size == 1 and pending:  # keep the finished batches (a torchrun world saves at its steps)
            with stop_signals(signal.SIG_IGN):  # a second Ctrl-C is ignored until the save is done
                saving.save(pending)
        raise


def _raise_failure(failure: tuple[str, str], strict_hint: str) -> None:
    kind, text = failure
    if kind == "nonfinite":
        raise NonFiniteOutputs(text)
    raise DataError(f"cannot decode image {text}{strict_hint}", reason=text.split(": ", 1)[-1])


def evaluate(samples: list[Sample], members: list[Member], plan: Plan, execution: Execution) -> EvalResult:
    """Evaluate the ensemble on `samples` as `plan` says (every crop set of it), in memory.

    Only the crops some set needs are extracted. Undecodable images raise DataError when
    `execution.strict`, else they are left out and listed in `skipped`.
    """
    set_names = list(plan.set_names)
    acc = Accumulator(len(members), set_names)
    probs = np.zeros((len(samples), members[0].num_classes), dtype=np.float32)
    evaluated = np.zeros(len(samples), dtype=bool)

    def keep(results: list[BatchResult]) -> None:
        for r in results:
            acc.add(r)
            probs[r.indices] = r.probs
            evaluated[r.indices] = True

    bar = Progress(len(samples), execution.progress, plan.crops_per_image, len(members))
    start = time.perf_counter()
    try:
        todo = list(range(plan.num_batches(len(samples))))
        evaluate_batches(samples, plan, members, todo, saving=Saving(keep, 1, 0.0), execution=execution, progress=bar)
    finally:
        bar.close()
    return EvalResult(
        [s for s, ok in zip(samples, evaluated) if ok],
        list(set_names),
        plan.crops_per_set,
        plan.crops_per_image,
        acc.tally(),
        probs[evaluated],
        plan.requested_set,
        time.perf_counter() - start,
        [(samples[i].rel_path, reason) for i, reason in acc.skipped],
    )


@dataclass
class Job:
    """A run whose every image-free check passed (api.run builds it): the settings, the run
    directory, the images, the members with their views, the device, and what goes into
    summary.json beside the results."""

    config: Any  # config.RunConfig
    out: Path
    samples: list[Sample]
    members: list[Member]
    device: Any  # torch.device
    set_names: list[str]  # the crop sets computed (all of the protocol's for --table)
    geometries: Geometries  # each member's views (views.member_geometries)
    real: Any = None  # ImageNet-ReaL labels (analysis.read_real_labels), or None
    data_report: dict | None = None  # what under --data was not evaluated (listing.Listing.to_dict)
    classes: Any = None  # benchmarks.ClassSubset: the prediction restricted to those classes, or None
    data_layout: str | None = None  # what --data was recognised as (listing.Listing.layout)

    def plan(self, batch_size: int) -> Plan:
        c = self.config
        return Plan.make(
            c.protocol,
            self.set_names,
            c.crops,
            batch_size,
            precision=c.precision,
            num_members=len(self.members),
            merges=c.merges,
            curve_samples=c.curve_samples,
            seed=c.seed,
            save_statistics=c.save_logits,
            geometries=self.geometries,
            classes=None if self.classes is None else self.classes.indices,
        )

    def resume_command(self) -> str:
        args = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")]
        if "--out" not in args:
            args += ["--out", str(self.out)]
        return "ensemble-eval " + " ".join(args) + " --resume"

    @contextlib.contextmanager
    def disk_errors(self):
        """An OSError while saving (a full disk, lost permissions) as one line: what is saved, how to resume."""
        from .runstate import disk_error

        try:
            yield
        except OSError as exc:
            raise disk_error(exc, self.out, self.resume_command()) from exc


def _on_main(world: D.World, make, *args):
    """`make(*args)` on rank 0, its value (or its ResumeError) handed to every process."""
    from .records import ResumeError

    made: tuple = (None, None)
    if world.is_main:
        try:
            made = (make(*args), None)
        except ResumeError as exc:
            made = (None, str(exc))
    value, problem = D.broadcast_from_main(made, world)
    if problem:
        raise ResumeError(problem)
    return value


def _open_store(job: Job, store, plan: Plan):
    """Rank 0 starts or resumes the progress store (chunks set aside named on stderr): what it
    holds (runstate.Opened)."""
    from .runstate import fingerprint

    fp = fingerprint(job.members, job.samples, plan)
    c = job.config
    num_classes = job.members[0].num_classes
    found = store.open(fp, plan, job.samples, num_classes, c.resume, c.overwrite, workers=max(1, c.workers))
    for line in found.problems:
        print(f"ensemble-eval: {line}", file=sys.stderr)
    return found


def _batch_choice(job: Job, store):
    """Rank 0 settles the forward batch (autobatch.choose: given, resumed, cached or timed)
    and logs it."""
    from .autobatch import Workload, choose
    from .config import default_batch_size
    from .crops import needed_indices

    c = job.config
    recorded = store.recorded_batch_size() if c.resume else None
    indices = needed_indices(c.protocol, job.set_names)
    work = Workload(c.protocol, indices, job.device, c.channels_last, c.precision, job.geometries)
    choice = choose(
        c.batch_size, job.members, job.samples, work, default_batch_size(job.device.type), recorded=recorded
    )
    if choice.source in ("timed", "cache"):  # the others are in summary.json (and -v)
        print(f"ensemble-eval: {choice.describe()}", file=sys.stderr)
    else:
        log.debug(choice.describe())
    return choice


def run_evaluation(job: Job) -> int:
    """The evaluation proper: sharded over torchrun processes, saved in chunks, resumable.

    Writes the result files into `job.out` on rank 0 and prints the report; returns the exit code."""
    from .runstate import ProgressStore

    world = D.world_from_env()
    device = D.init(world, job.device)  # before any collective
    out = Path(D.broadcast_from_main(str(job.out), world))  # one run directory for every process
    job = dataclasses.replace(job, device=device, out=out)
    store = ProgressStore(job.out)
    choice = _on_main(world, _batch_choice, job, store)
    plan = job.plan(choice.batch_size)
    opened = _on_main(world, _open_store, job, store, plan)
    if not _evaluate_remaining(job, store, plan, opened, world):
        D.finish(world)
        return EXIT_INTERRUPTED
    code = EXIT_OK
    if world.is_main:
        with job.disk_errors():
            code = _finish(job, store, plan, choice, bool(opened.done), world)
    code = D.broadcast_from_main(code, world)
    D.finish(world)
    return code


def _evaluate_remaining(job: Job, store, plan: Plan, opened, world: D.World) -> bool:
    """The batches the progress store does not hold yet, each saved into it; False when
    interrupted (what is finished is saved, the resume command printed)."""
    samples = job.samples
    remaining = [b for b in range(plan.num_batches(len(samples))) if b not in opened.done]
    if opened.done and world.is_main:
        done_images = opened.images + opened.skipped
        print(f"resuming {job.out}: {done_images} of {len(samples)} images already done", file=sys.stderr)

    def save(results: list[BatchResult]) -> None:
        with job.disk_errors():
            store.write(results)

    done = (opened.images, opened.skipped, opened.top1, opened.top5)
    c = job.config
    progress = Progress(len(samples), c.progress and world.is_main, plan.crops_per_image, len(job.members), done)
    hint = " (--strict: stopped; the images before it are saved, fix or remove the file, then add --resume)"
    try:
        evaluate_batches(
            samples,
            plan,
            job.members,
            remaining,
            saving=Saving(save, c.save_every, c.save_interval, hint),
            execution=Execution.of(c, job.device, world),
            progress=progress,
        )
    except KeyboardInterrupt:
        progress.close()  # before the message, so the bar does not overwrite it
        if world.is_main:
            print(
                f"ensemble-eval: interrupted: {store.saved_images} of {len(samples)} images are saved in "
                f"{job.out / 'progress'}; resume with:\n  {job.resume_command()}",
                file=sys.stderr,
            )
        return False
    finally:
        progress.close()
    return True


def _finish(job: Job, store, plan: Plan, choice, resumed: bool, world: D.World) -> int:
    """Rank 0, every batch done: predictions.npz (and logits.npz) from the chunks, the analysis,
    the other files, summary.json last (the results are complete once it exists), the report on
    the terminal; then progress/ goes. A kill at any point here leaves a run that --resume
    finishes: before summary.json every chunk is still there; after it, only the removal of
    progress/ remains."""
    from .analysis import analyze
    from .crops import nested_under
    from .outputs import LOGITS, PREDICTIONS, SUMMARY
    from .records import assemble
    from .report import analysis_files, clear_outputs, run_text, summary_record, with_analysis, write_summary
    from .rundir import record_files

    c, out = job.config, job.out
    clear_outputs(out)  # what an earlier, interrupted final write of this run left
    num_classes = job.members[0].num_classes
    total = assemble(store.chunks, job.samples, plan, [m.name for m in job.members], num_classes, out)
    result = _result(job, plan, total, resumed, world)
    compared_with = nested_under(c.protocol, list(plan.set_names))
    real_file = c.real_labels or ""
    analysis = analyze(
        total.records, c.crops, num_classes, c.table, job.real, real_file, compared_with, job.data_layout
    )  # in memory
    record = with_analysis(summary_record(c, job.members, result, job.device, choice, plan.geometries), analysis)
    record["data_listing"] = job.data_report or {"problems": [], "ignored": {}}
    record["data_layout"] = job.data_layout
    if job.classes is not None:
        record["class_subset"] = job.classes.to_dict()
    written = [PREDICTIONS.name] + ([LOGITS.name] if c.save_logits else [])
    written += analysis_files(out, record)
    write_summary(out, record)
    written = [SUMMARY.name, *written]
    record_files(out, "run", written)
    print(run_text(record, written, out, total.seconds, str(job.device)), end="")
    store.finish()
    return EXIT_SKIPPED if result.skipped else EXIT_OK


def _result(job: Job, plan: Plan, total, resumed: bool, world: D.World) -> EvalResult:
    """The run's counts from the assembled chunks (records.Assembled), as summary.json reports them."""
    return EvalResult(
        samples=[],
        set_names=list(plan.set_names),
        crops_per_set=plan.crops_per_set,
        crops_per_image=plan.crops_per_image,
        tally=total.counts.tally(),
        probs=None,
        requested_set=job.config.crops,
        seconds=total.seconds,
        skipped=[(job.samples[i].rel_path, reason) for i, reason in total.counts.skipped],
        resumed=resumed or total.sessions > 1,
        world_size=world.world_size,
        merges=plan.merges,
        sessions=total.sessions,
    )


def finished_run(out: Path) -> int:
    """`--resume` of a run whose results are complete (a kill came after summary.json): remove what is
    left of its progress, show its results; the exit code it had."""
    from .records import RunDirError
    from .report import read_summary, run_text
    from .runstate import ProgressStore

    record = read_summary(out)
    try:
        ProgressStore(out).finish()
    except OSError as exc:
        raise RunDirError(f"cannot remove the finished progress in {out} ({exc.strerror}); remove it by hand") from exc
    print(f"ensemble-eval: {out} is finished; its results:", file=sys.stderr)
    names = sorted(n for n in os.listdir(out) if not n.startswith("."))
    print(run_text(record, names, out, record.get("seconds"), record.get("device")), end="")
    return EXIT_SKIPPED if record.get("num_skipped") else EXIT_OK
