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

import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import distributed as D
from .checkpoints import Member
from .crops import CropScheme
from .data import DataError, Sample
from .ensemble import Accumulator, BatchResult, EvalResult, NonFiniteOutputs, Plan, run_batches
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SKIPPED, stop_signals
from .views import Geometries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saving:
    """When the loop hands finished batches to its `save` callback."""

    every_images: int = 32  # per process
    interval: float = 60.0  # seconds


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
    device: torch.device,
    todo: list[int],
    save: Callable[[list[BatchResult]], None],
    progress: Progress,
    saving: Saving = Saving(),
    workers: int = 0,
    channels_last: bool = True,
    strict: bool = False,
    strict_hint: str = "",
    world: D.World = D.World(),
    compile: bool = False,
) -> None:
    """Evaluate the global batches `todo` (sharded over the world), handing finished ones to
    `save` on rank 0 (every `saving.every_images` images per process, every `saving.interval`
    seconds, and at the end).

    `compile`: torch.compile the members first (ensemble.place_members).
    `strict`: an undecodable image stops the loop with a DataError once the clean batches
    before it are saved (a batch holding it is not saved, so it is redone after a fix).
    """
    mine = D.shard(todo, world)
    steps = math.ceil(len(todo) / world.world_size)  # the same on every process
    set_index = plan.set_names.index(plan.requested_set)
    batches = run_batches(samples, mine, plan, members, device, workers, channels_last, compile)
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
            world_counts = D.all_reduce_sum(counts + flags, world, device)
            images, skipped, top1, top5, save_now, stop = world_counts
            if world.is_main:
                progress.add(images, skipped, top1, top5)
            since_save += images + skipped
            if save_now or stop or step == steps - 1:
                gathered = D.gather_to_main((pending, failure), world)
                stopped = None
                if world.is_main:
                    save([r for part, _ in gathered for r in part])
                    stopped = next((f for _, f in gathered if f), None)
                pending, since_save, last_save = [], 0, time.monotonic()
                if stop:
                    _raise_failure(D.broadcast_from_main(stopped, world), strict_hint)
    except KeyboardInterrupt:
        if world.world_size == 1 and pending:  # keep the finished batches (a torchrun world saves at its steps)
            with stop_signals(signal.SIG_IGN):  # a second Ctrl-C is ignored until the save is done
                save(pending)
        raise


def _raise_failure(failure: tuple[str, str], strict_hint: str) -> None:
    kind, text = failure
    if kind == "nonfinite":
        raise NonFiniteOutputs(text)
    raise DataError(f"cannot decode image {text}{strict_hint}", reason=text.split(": ", 1)[-1])


def evaluate(
    samples: list[Sample],
    members: list[Member],
    scheme: CropScheme,
    set_names: list[str],
    requested_set: str,
    device: torch.device,
    batch_size: int,
    workers: int,
    channels_last: bool = True,
    progress: bool = True,
    strict: bool = True,
    precision: str = "fp32",
    compile: bool = False,
    geometries: Geometries | None = None,
) -> EvalResult:
    """Evaluate the ensemble on `samples` for every crop set in `set_names`, in memory.

    Only the crops some set needs are extracted. `batch_size` is the number of crops per
    forward pass; a loader batch holds max(1, batch_size // K) images. Undecodable images
    raise DataError when `strict`, else they are left out and listed in `skipped`.
    `geometries` (views.member_geometries): each member's own views; None: every member on
    `scheme` as it is.
    """
    plan = Plan.make(
        scheme, set_names, requested_set, batch_size, precision, num_members=len(members), geometries=geometries
    )
    acc = Accumulator(len(members), set_names)
    probs = np.zeros((len(samples), members[0].num_classes), dtype=np.float32)
    evaluated = np.zeros(len(samples), dtype=bool)

    def keep(results: list[BatchResult]) -> None:
        for r in results:
            acc.add(r)
            probs[r.indices] = r.probs
            evaluated[r.indices] = True

    bar = Progress(len(samples), progress, plan.crops_per_image, len(members))
    start = time.perf_counter()
    try:
        todo = list(range(plan.num_batches(len(samples))))
        evaluate_batches(
            samples,
            plan,
            members,
            device,
            todo,
            keep,
            bar,
            Saving(1, 0.0),
            workers,
            channels_last,
            strict,
            compile=compile,
        )
    finally:
        bar.close()
    return EvalResult(
        [s for s, ok in zip(samples, evaluated) if ok],
        list(set_names),
        plan.crops_per_set,
        plan.crops_per_image,
        acc.tally(),
        probs[evaluated],
        requested_set,
        time.perf_counter() - start,
        [(samples[i].rel_path, reason) for i, reason in acc.skipped],
    )


def _resume_command(out: Path) -> str:
    args = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")]
    if "--out" not in args:
        args += ["--out", str(out)]
    return "ensemble-eval " + " ".join(args) + " --resume"


def _open_store(store, config, members, samples, plan, world: D.World):
    """Rank 0 starts or resumes the progress store (chunks set aside named on stderr); every
    process gets what it holds (runstate.Opened), or the same ResumeError."""
    from .runstate import Opened, ResumeError, fingerprint

    opened: tuple = (Opened(), None)
    if world.is_main:
        try:
            fp = fingerprint(members, samples, plan)
            workers = max(1, config.workers)
            found = store.open(
                fp, plan, samples, members[0].num_classes, config.resume, config.overwrite, workers=workers
            )
            for line in found.problems:
                print(f"ensemble-eval: {line}", file=sys.stderr)
            opened = (found, None)
        except ResumeError as exc:
            opened = (Opened(), str(exc))
    found, problem = D.broadcast_from_main(opened, world)
    if problem:
        raise ResumeError(problem)
    return found


def _batch_choice(config, store, members, samples, set_names, device, world: D.World, geometries=None):
    """Rank 0 settles the forward batch (autobatch.choose: given, resumed, cached or timed)
    and logs it; every process gets the same choice, or the same ResumeError."""
    from .autobatch import choose
    from .config import default_batch_size
    from .crops import needed_indices
    from .runstate import ResumeError

    made: tuple = (None, None)
    if world.is_main:
        try:
            recorded = store.recorded_batch_size() if config.resume else None
            indices = needed_indices(config.protocol, set_names)
            choice = choose(
                config.batch_size,
                members,
                samples,
                config.protocol,
                indices,
                device,
                config.channels_last,
                config.precision,
                default_batch_size(device.type),
                recorded,
                geometries=geometries,
            )
            if choice.source in ("timed", "cache"):  # the others are in summary.json (and -v)
                print(f"ensemble-eval: {choice.describe()}", file=sys.stderr)
            else:
                log.debug(choice.describe())
            made = (choice, None)
        except ResumeError as exc:
            made = (None, str(exc))
    choice, problem = D.broadcast_from_main(made, world)
    if problem:
        raise ResumeError(problem)
    return choice


def run_evaluation(
    config, out: Path, samples, members, device, set_names, real, data_report=None, geometries=None
) -> int:
    """The evaluation proper: sharded over torchrun processes, saved in chunks, resumable.

    Writes the result files into `out` on rank 0 and prints the report; returns the exit code.
    `data_report`: what under --data was not evaluated (listing.Listing.to_dict), for summary.json;
    `geometries`: each member's views (views.member_geometries; None: all on the protocol)."""
    from .runstate import ProgressStore, disk_error

    world = D.world_from_env()
    device = D.init(world, device)
    out = Path(D.broadcast_from_main(str(out), world))  # one run directory for every process
    store = ProgressStore(out)
    choice = _batch_choice(config, store, members, samples, set_names, device, world, geometries)
    plan = Plan.make(
        config.protocol,
        set_names,
        config.crops,
        choice.batch_size,
        config.precision,
        num_members=len(members),
        merges=config.merges,
        curve_samples=config.curve_samples,
        seed=config.seed,
        save_statistics=config.save_logits,
        geometries=geometries,
    )
    opened = _open_store(store, config, members, samples, plan, world)
    remaining = [b for b in range(plan.num_batches(len(samples))) if b not in opened.done]
    if opened.done and world.is_main:
        done_images = opened.images + opened.skipped
        print(f"resuming {out}: {done_images} of {len(samples)} images already done", file=sys.stderr)

    def save(results: list[BatchResult]) -> None:
        try:
            store.write(results)
        except OSError as exc:  # a full disk or lost permissions: stop with what is saved
            raise disk_error(exc, out, _resume_command(out)) from exc

    done = (opened.images, opened.skipped, opened.top1, opened.top5)
    progress = Progress(len(samples), config.progress and world.is_main, plan.crops_per_image, len(members), done)
    try:
        evaluate_batches(
            samples,
            plan,
            members,
            device,
            remaining,
            save,
            progress,
            Saving(config.save_every, config.save_interval),
            config.workers,
            config.channels_last,
            config.strict,
            " (--strict: stopped; the images before it are saved, fix or remove the file, then add --resume)",
            world,
            config.compile,
        )
    except KeyboardInterrupt:
        progress.close()  # before the message, so the bar does not overwrite it
        if world.is_main:
            print(
                f"ensemble-eval: interrupted: {store.saved_images} of {len(samples)} images are saved in "
                f"{out / 'progress'}; resume with:\n  {_resume_command(out)}",
                file=sys.stderr,
            )
        D.finish(world)
        return EXIT_INTERRUPTED
    finally:
        progress.close()

    code = EXIT_OK
    if world.is_main:
        try:
            resumed = bool(opened.done)
            code = _finish(
                config, out, store, samples, plan, members, device, choice, real, resumed, world, data_report
            )
        except OSError as exc:
            raise disk_error(exc, out, _resume_command(out)) from exc
    code = D.broadcast_from_main(code, world)
    D.finish(world)
    return code


def _finish(config, out, store, samples, plan, members, device, choice, real, resumed, world, data_report) -> int:
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

    clear_outputs(out)  # what an earlier, interrupted final write of this run left
    names = [m.name for m in members]
    num_classes = members[0].num_classes
    total = assemble(store.chunks, samples, plan, names, num_classes, out)
    result = EvalResult(
        samples=[],
        set_names=list(plan.set_names),
        crops_per_set=plan.crops_per_set,
        crops_per_image=plan.crops_per_image,
        tally=total.counts.tally(),
        probs=None,
        requested_set=config.crops,
        seconds=total.seconds,
        skipped=[(samples[i].rel_path, reason) for i, reason in total.counts.skipped],
        resumed=resumed or total.sessions > 1,
        world_size=world.world_size,
        merges=plan.merges,
        sessions=total.sessions,
    )
    records = total.records  # what predictions.npz holds, not read back
    compared_with = nested_under(config.protocol, list(plan.set_names))
    analysis = analyze(records, config.crops, num_classes, config.table, real, config.real_labels or "", compared_with)
    record = with_analysis(summary_record(config, members, result, device, choice, plan.geometries), analysis)
    record["data_listing"] = data_report or {"problems": [], "ignored": {}}
    written = [PREDICTIONS.name] + ([LOGITS.name] if config.save_logits else [])
    written += analysis_files(out, record)
    write_summary(out, record)
    written = [SUMMARY.name, *written]
    record_files(out, "run", written)
    print(run_text(record, written, out, total.seconds, str(device)), end="")
    store.finish()
    return EXIT_SKIPPED if result.skipped else EXIT_OK


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
