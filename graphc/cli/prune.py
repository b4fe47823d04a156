"""``graphc prune``: the course's loop on a trained checkpoint (rank, remove, fine-tune, repeat)
until a FLOPs, parameter or sparsity budget or an accuracy floor, writing a checkpoint that
``graphc compile --weights`` turns into the small file."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from graphc.cli.checkpoints import (
    DATA_HELP,
    check_data,
    check_fits,
    classes_text,
    fit_head,
    load_data,
    model_name,
    need_all,
    read_checkpoint,
    trained_form,
)
from graphc.cli.common import (
    bound_threads,
    build_at,
    check_threads,
    check_writable,
    format_size,
    load_module,
    refuse_overwriting,
)
from graphc.errors import UsageError

PLOT_FORMATS = (".png", ".svg", ".pdf")


def _goal(args: argparse.Namespace) -> Any:
    from graphc.compress.prune import Goal

    given = [(kind, value) for kind, value in (("flops", args.target_flops),
                                                ("params", args.target_params),
                                                ("sparsity", args.sparsity)) if value is not None]
    if len(given) != 1:
        raise UsageError("prune needs exactly one budget", expected="one of --target-flops F, "
                         "--target-params P, --sparsity S",
                         got=", ".join(f"--{k}" for k, _ in given) or "none",
                         hint="e.g. --target-flops 0.5 keeps half the FLOPs.")
    return Goal(*given[0])


def _outputs(args: argparse.Namespace) -> None:
    check_writable(args.output, "-o")
    paths = [("-o", args.output), ("--plot", args.plot), ("--weights", args.weights),
             ("MODEL", args.model)]
    seen: dict[Path, str] = {}
    for option, path in paths:
        if not path or (option not in ("-o", "--plot") and not Path(path).is_file()):
            continue
        key = Path(path).resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} {path!r} would overwrite {option} {path!r}",
                             expected="a file of its own for each output",
                             got=f"{seen[key]} and {option} name the same file",
                             hint="Give each output its own file.")
        seen[key] = option
    refuse_overwriting([("-o", args.output), ("--plot", args.plot)],
                       [args.model, args.weights, args.data])
    if args.plot:
        check_writable(args.plot, "--plot")
        if Path(args.plot).suffix.lower() not in PLOT_FORMATS:
            raise UsageError(f"cannot draw {args.plot!r}", where="--plot",
                             expected=f"a {', '.join(PLOT_FORMATS)} file",
                             got=repr(Path(args.plot).suffix or "no suffix"))


def cmd_prune(args: argparse.Namespace) -> int:
    from graphc.compress.prune import PruneConfig, check_goal, plot_pruning, prune, rebuild
    from graphc.train.checkpoint import save_checkpoint
    from graphc.train.loop import TrainResult, model_state
    from graphc.train.step import apply_state

    check_threads(args.threads)
    goal = _goal(args)
    _outputs(args)
    if args.min_accuracy is not None and not 0 <= args.min_accuracy <= 100:
        raise UsageError("the accuracy floor is out of range", where="--min-accuracy",
                         expected="a percentage in 0..100, e.g. 98.5", got=args.min_accuracy)
    if args.method == "magnitude" and args.round_to is not None:
        raise UsageError("--round-to rounds channel counts", where="--round-to",
                         expected="--method l1 or l2 with --round-to",
                         got="--method magnitude", hint="Magnitude pruning keeps every "
                         "channel; it removes single connections.")
    ck = read_checkpoint(args.weights, args.model, "--weights")
    if ck.data.get("qat"):
        raise UsageError(f"{args.weights} is quantization-aware trained", where="--weights",
                         expected="a float checkpoint", got="a --qat checkpoint",
                         hint="Prune first, then train with --qat --init PRUNED.ckpt.")
    data = args.data or ck.data.get("data") or "digits"
    check_data(data, "--data")
    lr = args.lr if args.lr is not None else ck.config.learning_rate
    threads, note = (args.threads, None) if args.threads else \
        bound_threads(ck.config.threads, args.weights)
    if note:
        print(f"graphc: {note}", file=sys.stderr)
    train_config = replace(ck.config, lr=lr, freeze=(), unfreeze_at=None, threads=threads)
    config = PruneConfig(method=args.method, steps=args.steps,
                         finetune_epochs=args.finetune_epochs,
                         min_accuracy=None if args.min_accuracy is None
                         else args.min_accuracy / 100, scope=args.scope,
                         **({"round_to": args.round_to} if args.round_to else {}),
                         train=train_config,
                         latency_batch=args.latency_batch)
    check_goal(goal, config)
    module = load_module(args.model, "prune")
    probe = build_at(module, ck.config.seed, 1)
    fitted, _ = fit_head(probe, ck.state, ck.config.seed)
    refit = fitted is not probe

    def build(batch: int) -> Any:
        graph = build_at(module, ck.config.seed, batch)
        graph = fit_head(graph, ck.state, ck.config.seed)[0] if refit else graph
        return trained_form(graph, ck.config)

    earlier = ck.data.get("pruned") or {}
    start = rebuild(build, earlier)(1)
    need_all(args.weights, model_state(start), ck.state, args.model)
    before = {n: v for n, v in model_state(apply_state(start, ck.state)).items()}
    train_set, test_set = load_data(data, ck.data.get("classes"))
    check_fits(start, test_set, data, "--data")
    name = model_name(args.model)
    what = ("connections by |w|" if args.method == "magnitude"
            else f"channels by their {args.method.upper()} norm")
    budget = {"flops": f"FLOPs <= {goal.value:g}x", "params": f"parameters <= {goal.value:g}x",
              "sparsity": f"{100 * goal.value:g}% removed"}[goal.kind]
    print(f"graphc: pruning {name} ({what}) toward {budget} in {config.steps} steps, "
          f"{config.finetune_epochs} fine-tuning epochs each (lr {lr:g})", file=sys.stderr,
          flush=True)
    record = dict(ck.data)

    def save(result: Any) -> None:
        pruned = {**earlier, **result.record, "method": args.method,
                  "goal": {"kind": goal.kind, "value": goal.value}}
        save_checkpoint(args.output, name, TrainResult(result.state, result.history),
                        replace(train_config, epochs=max(config.finetune_epochs, 1)),
                        data={**record, "data": data, "pruned": pruned})

    result = prune(build, ck.state, train_set, test_set, goal, config, record=earlier,
                   on_step=save)
    if not result.kept:
        save(result)  # the floor refused the first step: the output is the model as it was
    print(f"pruned {name} on {data}{classes_text(ck.data.get('classes'))}: {result.stopped}")
    print(_table(result, config.latency_batch))
    if args.plot:
        after = model_state(apply_state(rebuild(build, result.record)(1), result.state))
        weights = [n for n in before if n in after and before[n].ndim > 1]
        plot_pruning(result, {n: before[n] for n in weights}, {n: after[n] for n in weights},
                     args.plot, title=f"{name}: {what}")
    final = result.final
    # Magnitude pruning keeps every shape: the file runs the same dense kernels, so a ratio
    # off 1 is the machine's noise, not the pruning's.
    if args.method != "magnitude" and final.latency_ratio > 1.05:
        print(f"  warning     the pruned file runs {final.latency_ratio:.2f}x the dense file's "
              f"time at batch {config.latency_batch} on onnxruntime: odd channel counts run "
              "slowly; try --round-to 16")
    print(f"  checkpoint  {args.output} (step {result.kept} of {len(result.steps)})")
    if args.plot:
        print(f"  plot        {args.plot}")
    compile_passes = " --passes prune-magnitude" if result.record.get("sparse") else ""
    print(f"  compile it  graphc compile {args.model} --weights {args.output} --pipeline "
          f"inference{compile_passes} -o {Path(args.output).stem}.onnx --accuracy {data}")
    return 0


def _table(result: Any, batch: int) -> str:
    base = result.base
    header = ("", "params", "FLOPs", "zeros", "file", f"latency b{batch}" if batch else "latency",
              "accuracy")
    rows = [header]
    for label, m in [("dense", base)] + [(f"step {s.step}" + (" (refused)" if s.step >
                                                              result.kept else ""), s.tuned)
                                         for s in result.steps]:
        rows.append((label, f"{m.params:,} ({m.params / base.params:.2f}x)",
                     f"{m.flops:,} ({m.flops / base.flops:.2f}x)", f"{100 * m.sparsity:.1f}%",
                     f"{format_size(m.file_bytes)} ({m.file_bytes / base.file_bytes:.2f}x)",
                     "-" if math.isnan(m.latency_ratio) else f"{m.latency_ratio:.2f}x",
                     f"{100 * m.accuracy:.2f}%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in rows]
    return "\n".join(lines)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``prune`` sub-command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("prune", parents=[common],
                       help="prune a trained model step by step, fine-tuning between steps")
    p.add_argument("model", help="a zoo model name or a .py file with build(seed, batch)")
    p.add_argument("--weights", metavar="CKPT", required=True,
                   help="the trained checkpoint to prune (from `graphc train`)")
    p.add_argument("-o", "--output", metavar="CKPT", required=True,
                   help="the pruned checkpoint (written after every accepted step)")
    p.add_argument("--data", metavar="DATA",
                   help="the data set to fine-tune and evaluate on (default: the checkpoint's): "
                        f"{DATA_HELP}")
    p.add_argument("--target-flops", type=float, metavar="F",
                   help="keep this fraction of the FLOPs (channel pruning), e.g. 0.5")
    p.add_argument("--target-params", type=float, metavar="P",
                   help="keep this fraction of the (nonzero) parameters, e.g. 0.25")
    p.add_argument("--sparsity", type=float, metavar="S",
                   help="remove this fraction: of the weights (magnitude) or of the channels "
                        "(l1, l2), e.g. 0.9")
    p.add_argument("--method", default="l1", metavar="NAME",
                   help="magnitude (single connections), l1 or l2 (whole channels by the sum "
                        "of |w| or of w^2; default l1)")
    p.add_argument("--steps", type=int, default=4, metavar="K",
                   help="remove gradually in K steps (default 4)")
    p.add_argument("--finetune-epochs", type=int, default=5, metavar="E",
                   help="fine-tuning epochs after each step (default 5)")
    p.add_argument("--min-accuracy", type=float, metavar="A",
                   help="stop when the test accuracy falls below A percent, keeping the last "
                        "good model")
    p.add_argument("--scope", default="layer", metavar="NAME",
                   help="layer (the same share of every layer, default) or global (ranked "
                        "across layers)")
    p.add_argument("--round-to", type=int, metavar="N",
                   help="round kept channel counts up to a multiple of N (default 8: "
                        "onnxruntime runs odd counts slowly; 1 keeps exact shares)")
    p.add_argument("--lr", type=float, metavar="LR",
                   help="fine-tuning learning rate, decayed over each step's fine-tuning by the "
                        "checkpoint's schedule (default: the checkpoint's)")
    p.add_argument("--latency-batch", type=int, default=256, metavar="N",
                   help="time each step's file against the dense one at this batch size on "
                        "onnxruntime, one thread (0: do not time; default 256)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="onnxruntime threads for fine-tuning (default: one per core)")
    p.add_argument("--plot", metavar="FILE",
                   help="draw accuracy against FLOPs and parameters, and the weight "
                        "histograms per layer (.png, .svg or .pdf)")
    p.set_defaults(func=cmd_prune)
