"""The `ftcl` command: thin argument parsing over spec, runner and tracking.

Exit codes: 0 success, 1 a run or report failed, 2 bad input (spec, flag, path, name),
130 interrupted (resume with `ftcl run SPEC --resume`).
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"ftcl: error: {message}", file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="ftcl",
        formatter_class=formatter,
        description="Fine-tuning RL models as a forgetting-mitigation problem: run retention-method "
        "grids with RLlib + Ray Tune, track forgetting curves in MLflow, build reports.",
        epilog=textwrap.dedent(
            """\
            examples:
              ftcl list
              ftcl validate tune_configs/toys/apple_retrieval.yaml
              ftcl run tune_configs/toys/apple_retrieval.yaml --set seeds=[0,1]
              ftcl report apple_retrieval
              ftcl ui
              ftcl bench --quick
            """
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run (or resume) an experiment spec", formatter_class=formatter,
        description="Run an experiment spec as a Ray Tune grid over methods × seeds (× the spec's grid). "
        "Results go to MLflow (step = environment steps) and to <ftcl home>/ray_results/<spec>_<time>/.",
        epilog=textwrap.dedent(
            """\
            examples:
              ftcl run tune_configs/toys/apple_retrieval.yaml
              ftcl run tune_configs/toys/apple_retrieval.yaml --set budget.env_steps=20000 --set seeds=[0]
              ftcl run SPEC --address ray://head-node:10001      # an existing Ray cluster
              ftcl run SPEC --resume                              # continue the latest interrupted run
            """
        ),
    )
    run.add_argument("spec", help="path to an experiment spec (YAML)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec field by dotted path; VALUE is YAML (repeatable)")
    run.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    run.add_argument("--resume", action="store_true",
                     help="continue the latest run of this spec from its checkpoints (give the same spec and --set "
                     "overrides as the first run: they must match its saved spec)")
    run.add_argument("--verbose", action="store_true", help="also print Ray Tune's trial tables and hints")

    pretrain = sub.add_parser(
        "pretrain", help="train π* and write its artifact folder (module, retention data, provenance)",
        formatter_class=formatter,
        description="Run only the pre-training stage of a spec (`pretrained.train`) and copy π* — the RLModule "
        "checkpoint, the data it collected (BC buffer, Fisher data, EM transitions) and provenance.json with "
        "sha256 of each file — to --out. NAME is a spec path or an env name with tune_configs/<name>/pretrain.yaml.",
        epilog=textwrap.dedent(
            """\
            examples:
              ftcl pretrain robotic_sequence --out artifacts/robotic_sequence
              ftcl pretrain tune_configs/toys/apple_retention.yaml --out /tmp/apple_pi_star
              ftcl pretrain robotic_sequence --resume --out artifacts/robotic_sequence
            """
        ),
    )
    pretrain.add_argument("spec", metavar="NAME", help="spec path, or env name with tune_configs/<name>/pretrain.yaml")
    pretrain.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    pretrain.add_argument("--out", default=None, help="artifact folder (default: <ftcl home>/pretrained/<spec>)")
    pretrain.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    pretrain.add_argument("--resume", action="store_true", help="continue the latest pre-training of this spec")

    explore = sub.add_parser(
        "explore", help="explore Montezuma's Revenge without an agent and store start states per room",
        formatter_class=formatter,
        description="Go-Explore-style restore-and-explore on the emulator's RAM (no trained agent, sticky actions "
        "off): an archive of cells (room, level, inventory, coarse position), then one start state per room "
        "reached, written to OUT/start_states.npz with OUT/provenance.json (sha256). Progress every 30 s; the "
        "archive is saved every minute under <ftcl home>/explore/ and `--resume` continues it.",
        epilog=textwrap.dedent(
            """\
            examples:
              ftcl explore montezuma --frames 2000000 --out artifacts/montezuma
              ftcl explore montezuma --demo artifacts/montezuma/demo/montezuma_demo.npz --frames 5000000 --out /tmp/states
              ftcl explore montezuma --frames 20000000 --seed 1 --out /tmp/states --resume
            """
        ),
    )
    explore.add_argument("env", choices=["montezuma"])
    explore.add_argument("--frames", type=int, default=20_000_000, help="emulator frames in all (default 20M)")
    explore.add_argument("--seed", type=int, default=0)
    explore.add_argument("--out", required=True, help="artifact folder for start_states.npz and provenance.json")
    explore.add_argument("--resume", action="store_true", help="continue the saved archive of this seed")
    explore.add_argument("--demo", default=None, metavar="PATH",
                         help="seed a new archive with a replayed human demonstration: an ftcl .npz "
                         "(artifacts/montezuma/demo/montezuma_demo.npz) or an atari-reset .demo file")

    demo_states = sub.add_parser(
        "demo-states", help="store start states along a human demonstration's path through rooms",
        formatter_class=formatter,
        description="Replay a human demonstration of Montezuma's Revenge (sticky actions off) and store the "
        "emulator state every K agent steps of its first stay in each named room (paper numbers), named "
        "room<N>_step<k>: start states from the room's entry to a few steps before its exit, for pre-training "
        "backward from the demonstration.",
        epilog="example:\n  ftcl demo-states montezuma --rooms 7 --every 8 "
        "--with artifacts/montezuma/start_states/start_states.npz --out artifacts/montezuma/room7_path",
    )
    demo_states.add_argument("env", choices=["montezuma"])
    demo_states.add_argument("--rooms", required=True, help="paper room numbers, comma-separated (7 or 7,8)")
    demo_states.add_argument("--every", type=int, default=8, help="agent steps between two states (default 8)")
    demo_states.add_argument("--demo", default=None, metavar="PATH",
                             help="an ftcl demonstration .npz (default artifacts/montezuma/demo/montezuma_demo.npz)")
    demo_states.add_argument("--with", dest="with_states", default=None, metavar="PATH",
                             help="a start-state file whose states the output holds too (the rooms' entries)")
    demo_states.add_argument("--out", required=True, help="artifact folder for start_states.npz and provenance.json")

    importer = sub.add_parser(
        "import-checkpoint", help="turn the paper's NetHack checkpoint into an ftcl π*",
        formatter_class=formatter,
        description="Read a checkpoint of the paper's NetHack π* (Tuyls et al.'s training format, "
        "torch.load(p)['learner_state']['model'], or the authors' sample-factory conversion, ['model']) strictly, "
        "with the widths its shapes give, and write OUT/module (a π* for `pretrained.module`, model tty_lstm) "
        "and OUT/provenance.json.",
        epilog="example:\n  ftcl import-checkpoint nethack /data/amzn-AA-BC_pretrained/checkpoint.tar "
        "--format sample_factory --out artifacts/nethack/pi_star_paper",
    )
    importer.add_argument("env", choices=["nethack"])
    importer.add_argument("checkpoint", help="the checkpoint file")
    importer.add_argument("--format", default="tuyls", choices=["tuyls", "sample_factory"])
    importer.add_argument("--out", required=True, help="a new folder for module/ and provenance.json")

    validate = sub.add_parser(
        "validate", help="check a spec without running it", formatter_class=formatter,
        description="Load a spec with its presets and overrides, validate every field and print the trial grid.",
        epilog="example:\n  ftcl validate tune_configs/toys/apple_retrieval.yaml --set methods.0.coeff=2",
    )
    validate.add_argument("spec")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    report = sub.add_parser(
        "report", help="plots, tables and an HTML dashboard from MLflow", formatter_class=formatter,
        description="Read an experiment's runs from MLflow and write forgetting curves (IQM and 90%% stratified-bootstrap CI "
        "over seeds, x = environment steps), a final-value table (CSV, Markdown) and report.html.",
        epilog=textwrap.dedent(
            """\
            examples:
              ftcl report apple_retrieval                          # latest group, spec's dashboard
              ftcl report tune_configs/toys/apple_retrieval.yaml   # experiment and layout from a spec
              ftcl report apple_retrieval --layout default --group all --out reports/apple
            """
        ),
    )
    report.add_argument("experiment", help="MLflow experiment name, or a spec path")
    report.add_argument("--layout", default=None, help="dashboard layout name in dashboards/ or a YAML path")
    report.add_argument("--group", default=None, help="run group (an `ftcl run` invocation); 'all' for every group")
    report.add_argument("--stage", default="finetune", choices=["finetune", "pretrain"])
    report.add_argument("--out", default=None, help="output folder (default: <ftcl home>/reports/<experiment>)")
    report.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: ftcl's store)")

    evaluate = sub.add_parser(
        "evaluate", help="evaluate a trial checkpoint, an experiment's trials or a π* on its env's suites",
        formatter_class=formatter, description="Evaluate with the trials' own code (module ftcl.evaluate); "
        "print a table and log evaluate/<suite>/<metric> to MLflow.",
        epilog="examples:\n  ftcl evaluate ~/.ftcl/ray_results/apple_retrieval_20261203-120000   # every trial\n"
        "  ftcl evaluate artifacts/robotic_sequence --suite stage_3_push-wall --episodes 20",
    )
    evaluate.add_argument("target", help="a trial checkpoint or folder, an experiment folder, or a π* folder")
    evaluate.add_argument("--suite", dest="suites", action="append", default=[], help="a suite (repeat; default: the trial's)")
    evaluate.add_argument("--episodes", type=int, default=None)
    evaluate.add_argument("--seed", type=int, default=None, help="default: the trial's evaluation seed")
    evaluate.add_argument("--spec", default=None, help="a π*'s env and evaluation from this spec")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    evaluate.add_argument("--video", type=int, default=0, metavar="K", help="record the first K episodes per suite (MP4)")
    evaluate.add_argument("--out", default=None, help="folder for videos (default: <ftcl home>/evaluate/<target>)")
    evaluate.add_argument("--no-mlflow", action="store_true", help="print only")
    evaluate.add_argument("--tracking-uri", default=None)

    ui = sub.add_parser(
        "ui", help="start the MLflow UI on 127.0.0.1", formatter_class=formatter,
        description="Start a light MLflow UI (one worker, no job runner) on 127.0.0.1 over ftcl's store.",
        epilog="example:\n  ftcl ui --port 5055",
    )
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri", default=None)

    sub.add_parser(
        "bench", help="throughput benchmarks in the repository's benchmarks/ folder: env rates, plain PyTorch, "
        "ftcl, Stable-Baselines3 (not in CI)",
        add_help=False,
        description="Runs benchmarks/run.py of the repository checkout; `ftcl bench --help` lists its options.",
    )

    sub.add_parser(
        "list", help="list environments, suites, methods, algorithms, specs, presets, dashboards",
        description="List what specs can name.", epilog="example:\n  ftcl list",
        formatter_class=formatter,
    )
    return parser


# ----- commands -------------------------------------------------------------------------------------
def _load(spec_path: str, overrides: list[str]):
    from ftcl.spec import load_spec

    return load_spec(spec_path, overrides)


def cmd_validate(args) -> int:
    from ftcl.plan import plan_trials

    spec = _load(args.spec, args.overrides)
    if spec.pretrained.clone is not None:
        print(f"spec {spec.name!r} is valid: `ftcl pretrain` records and clones {spec.pretrained.clone.games} games")
        return 0
    stages = (["pretrain"] if spec.pretrained.train else []) + ["finetune"]
    print(f"spec {spec.name!r} is valid: env={spec.env.name} algorithm={spec.algorithm.name} "
          f"budget={spec.budget.env_steps:,} steps")
    for stage in stages:
        plans = plan_trials(spec, stage)
        print(f"  {stage}: {len(plans)} trials: " + ", ".join(p.key for p in plans[:12])
              + (" ..." if len(plans) > 12 else ""))
    return 0


def cmd_run(args) -> int:
    from ftcl.runner import ExperimentInterrupted, run_experiment

    spec = _load(args.spec, args.overrides)  # with --resume: must equal the saved spec (checked in run_experiment)
    try:
        run_experiment(spec, address=args.address, resume=args.resume, verbose=args.verbose)
    except ExperimentInterrupted as error:
        return _fail(str(error), EXIT_INTERRUPTED)
    except RuntimeError as error:
        return _fail(str(error), EXIT_FAILED)
    return 0


def cmd_pretrain(args) -> int:
    from ftcl.pretrain.export import export_pretrained_artifacts
    from ftcl.runner import ExperimentInterrupted, command_line, resume_command, run_experiment
    from ftcl.spec import REPO_ROOT
    from ftcl.tracking.store import ftcl_home

    spec_path = Path(args.spec)
    if not spec_path.suffix and not spec_path.exists():
        spec_path = REPO_ROOT / "tune_configs" / args.spec / "pretrain.yaml"
        if not spec_path.is_file():
            return _fail(f"{args.spec!r} is neither a spec file nor an env with tune_configs/{args.spec}/pretrain.yaml")
    spec = _load(str(spec_path), args.overrides)
    out = Path(args.out) if args.out else ftcl_home() / "pretrained" / spec.name
    try:
        if spec.pretrained.clone is not None:  # a behavioural clone, made in this process (no Tune stage)
            from ftcl.pretrain.nethack_clone import pretrain_by_cloning

            folders = [pretrain_by_cloning(spec, out, command_line(), args.resume)]
        else:
            experiment_dir = run_experiment(spec, address=args.address, resume=args.resume, pretrain_only=True)
            folders = export_pretrained_artifacts(experiment_dir, spec, out)
    except KeyboardInterrupt:  # the clone's; a Tune stage reports its own interruption
        return _fail(f"stopped; `{resume_command()}` continues", EXIT_INTERRUPTED)
    except ExperimentInterrupted as error:
        return _fail(str(error), EXIT_INTERRUPTED)
    except RuntimeError as error:
        return _fail(str(error), EXIT_FAILED)
    for folder in folders:
        print(f"pre-trained policy written to {folder}")
    return 0


def cmd_explore(args) -> int:
    from ftcl.envs.montezuma_explore import explore, write_start_states
    from ftcl.runner import command_line
    from ftcl.tracking.store import ftcl_home

    if args.frames <= 0:
        return _fail(f"--frames must be > 0 (got {args.frames})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out}: exists and is not a folder")
    archive_path = ftcl_home() / "explore" / f"{args.env}_seed{args.seed}" / "archive.pkl"
    if archive_path.exists() and not args.resume:
        return _fail(f"{archive_path} holds an earlier exploration of seed {args.seed}: add --resume to continue it, "
                     "or delete it to start again")
    try:
        demo = None
        if args.demo is not None:
            from ftcl.envs.montezuma_demo import load_demo

            demo = load_demo(args.demo)
        archive = explore(args.frames, seed=args.seed, resume_from=archive_path if args.resume else None,
                          checkpoint=archive_path, demo=demo)
    except ValueError as error:
        return _fail(str(error))
    path = write_start_states(archive, out, command_line())
    print(f"{len(archive.cells)} cells, rooms {[room for _, room in archive.rooms()]}; start states written to {path}")
    return 0


def cmd_demo_states(args) -> int:
    from ftcl.envs.montezuma import DEFAULT_DEMONSTRATION
    from ftcl.envs.montezuma_demo import load_demo, write_path_start_states
    from ftcl.envs.montezuma_states import load_start_states
    from ftcl.runner import command_line

    try:
        rooms = [int(part) for part in args.rooms.split(",")]
    except ValueError:
        return _fail(f"--rooms must be paper room numbers separated by commas, like 7 or 7,8 (got {args.rooms!r})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out}: exists and is not a folder")
    try:
        demo = load_demo(args.demo or DEFAULT_DEMONSTRATION)
        if args.with_states is not None:
            load_start_states(args.with_states)  # checked before the replay
        path = write_path_start_states(demo, out, rooms, args.every, command_line(),
                                       None if args.with_states is None else Path(args.with_states))
    except ValueError as error:
        return _fail(str(error))
    print(f"start states along the demonstration in rooms {rooms}, every {args.every} agent steps: {path}")
    return 0


def cmd_import_checkpoint(args) -> int:
    from ftcl.pretrain.nethack_import import import_paper_checkpoint
    from ftcl.runner import command_line

    try:
        provenance = import_paper_checkpoint(args.checkpoint, args.format, args.out, command_line())
    except ValueError as error:
        return _fail(str(error))
    parameters = sum(provenance["pi_star"]["parameters"].values())
    print(f"π* ({parameters:,} parameters, h_dim {provenance['model_options']['h_dim']}) written to {args.out}/module")
    return 0


def cmd_report(args) -> int:
    from ftcl.tracking.report import ReportError, build_report
    from ftcl.tracking.store import ftcl_home, tracking_uri

    experiment, layout, uri = args.experiment, args.layout, args.tracking_uri
    if experiment.endswith((".yaml", ".yml")):
        spec = _load(experiment, [])
        experiment, layout, uri = spec.experiment_name, layout or spec.tracking.dashboard, uri or spec.tracking.uri
    out = Path(args.out) if args.out else ftcl_home() / "reports" / experiment
    try:
        files = build_report(experiment, tracking_uri=tracking_uri(uri), out_dir=out,
                             layout=layout or "default", group=args.group, stage=args.stage)
    except ReportError as error:
        return _fail(str(error))
    except Exception as error:  # MLflow's errors of a store that answers but is no MLflow server
        from mlflow.exceptions import MlflowException

        if not isinstance(error, MlflowException):
            raise
        return _fail(f"MLflow store {tracking_uri(uri)!r}: {str(error).splitlines()[0][:300]}")
    print(f"report written to {out}")
    for path in files.all_paths():
        print(f"  {path}")
    return 0


def cmd_evaluate(args) -> int:
    from ftcl.evaluate import evaluate_command
    from ftcl.spec import SpecError

    try:
        return evaluate_command(args)
    except (ValueError, SpecError) as error:
        return _fail(str(error))


def cmd_ui(args) -> int:
    from ftcl.tracking.ui import serve_ui

    try:
        return serve_ui(args.tracking_uri, args.port)
    except ValueError as error:
        return _fail(str(error))


def cmd_list(args) -> int:
    from ftcl.envs.registry import ENVS
    from ftcl.retention.registry import METHOD_NAMES
    from ftcl.spec import ALGORITHMS, available_method_presets, available_presets, available_specs
    from ftcl.tracking.dashboard import available_layouts

    print("environments:")
    for entry in ENVS.values():
        try:
            suites = ", ".join(entry.suites_for(entry.validate_options({}))) or "-"
        except Exception as error:  # a simulator that is not installed still lists
            suites = f"(unavailable: {type(error).__name__})"
        print(f"  {entry.name:<18} {entry.description}\n  {'':<18} suites: {suites}")
    from ftcl.models import MODELS

    print("algorithms: " + ", ".join(ALGORITHMS))
    print("models:     " + ", ".join(MODELS) + "  (algorithm.model)")
    print("methods:    " + ", ".join(METHOD_NAMES))
    print("specs:\n  " + "\n  ".join(available_specs()))
    print("presets:    " + (", ".join(available_presets()) or "-"))
    print("method presets: " + (", ".join(available_method_presets()) or "-") + "  (a method entry `{preset: NAME}`)")
    print("dashboards: " + ", ".join(available_layouts()))
    return 0


def main(argv: list[str] | None = None) -> int:
    from ftcl.spec import SpecError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own options, parsed by benchmarks/run.py at the repository root
        import ftcl

        root = Path(ftcl.__file__).resolve().parents[1]
        if not (root / "benchmarks" / "run.py").is_file():
            return _fail(f"bench: no benchmarks/ folder next to the ftcl package (looked in {root}); the benchmarks "
                         "ship with the repository, not the installed package: use a checkout installed with "
                         "`pip install -e .` (make setup)")
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        from benchmarks.run import main as bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    handlers = {"run": cmd_run, "pretrain": cmd_pretrain, "explore": cmd_explore, "demo-states": cmd_demo_states,
                "import-checkpoint": cmd_import_checkpoint, "validate": cmd_validate,
                "report": cmd_report, "evaluate": cmd_evaluate, "ui": cmd_ui, "list": cmd_list}
    try:
        return handlers[args.command](args)
    except SpecError as error:
        return _fail(str(error))


if __name__ == "__main__":
    sys.exit(main())
