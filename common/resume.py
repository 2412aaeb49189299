"""Stopping, resuming and guarding a run: what may resume from what, signal handling, and the
checks that keep a crash or a bad step from costing more than the current step.

The training loop (common/train.py) uses these; the contract is in its docstring.
"""
import os
import signal
import threading

import torch

from common import checkpoint, dist, log
from common.errors import UserError, one_line

# settings that must agree between a checkpoint and the run resuming from it (with the script's
# own algorithm flags): they fix the model's shapes, the data and the optimisation trajectory
RESUME_KEYS = ("algorithm", "dataset", "batch_size", "queue_size", "topk", "proj_dim", "views",
               "subset", "epochs", "seed", "width", "hidden_dim", "lr", "warmup_epochs",
               "weight_decay", "bn_splits")
# settings that may change on resume, at the price of a continuation that is not bit-identical
RESUME_WARN_KEYS = ("aug", "amp")


class NonFiniteLoss(Exception):
    """A non-finite loss (or weights) stopped the run; the last good checkpoint is kept."""


class Interrupted(Exception):
    """SIGTERM/SIGINT (or --stop-after) honoured: a checkpoint was written, the run can resume."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = int(signum)


def check_results(config_path, args, ckpt_path, name):
    """Never overwrite another run's results: a finished run needs --overwrite, and so do the
    unfinished results of a run with other settings and no checkpoint to resume."""
    if args.overwrite or not os.path.exists(config_path):
        return
    try:
        old = log.read_json(config_path)
    except (OSError, ValueError):
        raise UserError(f"{config_path} exists but cannot be read; pass --overwrite to replace "
                        f"run {name}'s results, or choose another --seed/--record") from None
    if old.get("finished"):
        raise UserError(f"run {name} has finished results in {args.results_dir}; "
                        f"pass --overwrite to run it again, or choose another --seed/--record")
    if not args.resume and not os.path.exists(ckpt_path):
        diff = _differences(old, args, RESUME_KEYS + tuple(args.algorithm_flags))
        if diff:
            raise UserError(f"{args.results_dir} holds unfinished results of another run named "
                            f"{name} ({'; '.join(diff)}) and {ckpt_path} does not exist; pass "
                            f"--overwrite to replace them, or choose another --seed/--record")


def _differences(saved, args, keys):
    return [f"{k} {saved.get(k)!r} there, {getattr(args, k)!r} here" for k in keys
            if k in saved and getattr(args, k, None) is not None and saved[k] != getattr(args, k)]


def resume_source(args, ckpt_path):
    """(checkpoint to resume from or None, why) -- the log says which."""
    if args.resume:
        return args.resume, "--resume"
    if os.path.exists(ckpt_path) and not args.overwrite:
        return ckpt_path, "automatically: the run's own checkpoint exists; --overwrite starts afresh"
    return None, None


def check_compatible(ckpt, args, path):
    if not isinstance(ckpt, dict) or ckpt.get("format") != "mini-ssl/1":
        raise UserError(f"{path} is not a Mini-SSL training checkpoint")
    how = "choose a matching checkpoint" if args.resume else "pass --overwrite to start afresh"
    if ckpt.get("algorithm") != args.algorithm:
        raise UserError(f"cannot resume from {path}: it is a {ckpt.get('algorithm')} checkpoint "
                        f"and {args.script} trains {args.algorithm} ({how})")
    saved = ckpt.get("args", {})
    diff = _differences(saved, args, RESUME_KEYS + tuple(args.algorithm_flags))
    if diff:
        raise UserError(f"cannot resume from {path}: settings differ: {'; '.join(diff)} ({how})")
    for k in _differences(saved, args, RESUME_WARN_KEYS):
        log.say(f"note: resuming with different {k}: the continuation is not bit-identical to an "
             f"uninterrupted run")


def load_training_state(ckpt, model, optimizer, path):
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"{path} does not fit this model: {one_line(e)}") from None


def load_or_error(path):
    try:
        return checkpoint.load(path)
    except UserError as e:
        return e


def gather_objects(obj):
    """[`obj` of rank r for every r] (a collective under torchrun)."""
    if not dist.is_dist():
        return [obj]
    out = [None] * dist.world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def this_rank(values, fallback=None):
    """This rank's entry of a per-rank list saved by `gather_objects` (random-generator states, partial
    epoch sums); `fallback` when the number of processes changed."""
    if not values:
        return None
    if len(values) != dist.world_size():
        log.say(f"note: the checkpoint was written by {len(values)} process(es), this run has "
             f"{dist.world_size()}: the rest of the interrupted epoch is not bit-identical")
        return fallback
    return values[dist.rank()]


@torch.no_grad()
def all_finite(module):
    flags = [torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(flags).all().item()) if flags else True


@torch.no_grad()
def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def last_good(ckpt_path, at, steps):
    """Where the last good checkpoint is, for the message of a stopped run."""
    if at is None:
        return "no checkpoint was written yet; lower --lr or pass --skip-nonfinite N"
    epoch, step = at
    where = f"step {step}/{steps} of epoch {epoch + 1}" if step else f"epoch {epoch}"
    return (f"the last good checkpoint {ckpt_path} ({where}) is kept and a rerun resumes from it; "
            f"lower --lr or pass --skip-nonfinite N")


class StopRequest:
    """SIGTERM/SIGINT handlers that only note the request: the training loop finishes the current
    step, writes a checkpoint and raises Interrupted. A second signal gets the previous handler
    (SIGTERM kills, Ctrl-C raises KeyboardInterrupt). `stop_after` = (E, S or None), from the
    hidden --stop-after flag, sends SIGTERM to this process after step S of epoch E (or after
    epoch E), for tests."""

    def __init__(self, stop_after=None):
        self.signum, self.stop_after, self.previous = None, stop_after, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            for s in (signal.SIGTERM, signal.SIGINT):
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            return
        self.__exit__()
        signal.raise_signal(signum)

    @property
    def requested(self):
        return self.signum is not None

    @property
    def name(self):
        return signal.Signals(self.signum).name

    def check(self, epoch, step=None):
        if self.stop_after is None or tuple(self.stop_after) != (epoch, step) or self.requested:
            return
        if self.previous:
            signal.raise_signal(signal.SIGTERM)  # through the real handler
        else:
            self.signum = signal.SIGTERM

