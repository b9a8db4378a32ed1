"""The ``ebw`` command: ``serve`` (the server), ``send`` (an MLLP client), ``config``, and the
operations commands ``check``, ``backup``, ``restore``, ``stats`` (``ebw.ops``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__


def _cmd_serve(args: argparse.Namespace) -> int:
    from . import config, log
    from .errors import ConfigError

    try:
        cfg = config.load()
    except ConfigError as exc:
        print(f"ebw: configuration error: {exc}", file=sys.stderr)
        return 2
    log.setup(cfg.log_level)
    from .supervisor import serve

    return serve(cfg)


def _read_messages(path: str) -> list[bytes]:
    """Messages of a file: MLLP-framed, or plain text with segments on lines
    (a blank line or a new MSH starts the next message)."""
    data = open(path, "rb").read() if path != "-" else sys.stdin.buffer.read()
    if b"\x0b" in data:
        from .mllp import FrameReader

        return FrameReader(64 * 1024 * 1024).feed(data)
    messages: list[list[bytes]] = []
    for line in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        line = line.rstrip()
        if not line:
            if messages and messages[-1]:
                messages.append([])
            continue
        if line.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(line)
    return [b"\r".join(m) + b"\r" for m in messages if m]


def _cmd_send(args: argparse.Namespace) -> int:
    from .mllp import MllpClient

    worst = 0
    with MllpClient(args.host, args.port, timeout=args.timeout) as client:
        for path in args.files:
            for msg in _read_messages(path):
                ack = client.send(msg)
                text = ack.decode("utf-8", "replace").replace("\r", "\n").strip()
                print(text + "\n")
                code = ""
                for seg in ack.split(b"\r"):
                    if seg.startswith(b"MSA"):
                        code = seg[4:6].decode("ascii", "replace")
                if code != "AA":
                    worst = 1
    return worst


def _cmd_config(args: argparse.Namespace) -> int:
    from . import config
    from .errors import ConfigError

    if args.check:
        try:
            config.load()
        except ConfigError as exc:
            print(f"ebw: configuration error: {exc}", file=sys.stderr)
            return 2
        print("configuration OK")
        return 0
    if args.env_file:
        print(config.env_file(), end="")
        return 0
    print(config.describe())
    return 0


def _load_config():  # type: ignore[no-untyped-def]
    from . import config
    from .errors import ConfigError

    try:
        return config.load()
    except ConfigError as exc:
        print(f"ebw: configuration error: {exc}", file=sys.stderr)
        return None


def _cmd_replay(args: argparse.Namespace) -> int:
    from .errors import EbwError
    from .maintenance import replay

    cfg = _load_config()
    if cfg is None:
        return 2

    def progress(r) -> None:  # type: ignore[no-untyped-def]
        print(f"\r{r.replayed} messages replayed", end="", file=sys.stderr, flush=True)

    try:
        r = replay(cfg, dry_run=args.dry_run, progress=progress)
    except EbwError as exc:
        print(f"\nebw: {exc}", file=sys.stderr)
        return 1
    print(file=sys.stderr)
    print(
        ("dry run (nothing written): " if args.dry_run else "")
        + f"{r.replayed} messages replayed, {r.skipped} skipped (not AA), {r.failed} failed; "
        f"{r.encounters} encounters, {r.active} active; accession numbers kept {r.accessions_kept}, "
        f"new {r.accessions_new}; {r.seconds:.1f} s"
    )
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .maintenance import explain

    cfg = _load_config()
    if cfg is None:
        return 2
    if not (args.patient or args.visit):
        print("ebw explain: give --patient ID or --visit NUMBER", file=sys.stderr)
        return 2
    lines = explain(cfg, args.patient, args.visit)
    print("\n".join(lines) if lines else "no encounter found for that patient or visit")
    return 0 if lines else 1


def _cmd_dry_run(args: argparse.Namespace) -> int:
    import time as _time

    from .errors import EbwError
    from .maintenance import dry_run_rules

    cfg = _load_config()
    if cfg is None:
        return 2
    rules = open(args.rules).read() if args.rules.endswith(".json") else args.rules
    try:
        r = dry_run_rules(cfg, rules, ep=args.endpoint, step_seconds=args.step_minutes * 60)
    except ValueError as exc:
        print(f"ebw dry-run: the candidate rules are invalid: {exc}", file=sys.stderr)
        return 2
    except EbwError as exc:
        print(f"ebw dry-run: {exc}", file=sys.stderr)
        return 1
    print(f"replayed {r.replay.replayed} messages; worklist size, current rules vs candidate:")
    print(f"{'time (UTC)':>20}  {'current':>8}  {'candidate':>9}")
    for t, old, new in r.samples:
        print(f"{_time.strftime('%Y-%m-%d %H:%M', _time.gmtime(t)):>20}  {old:>8}  {new:>9}")
    print(f"now: {len(r.entering)} encounters would enter the list, {len(r.leaving)} would leave it")
    for k in r.entering[: args.show]:
        print(f"  + {k}")
    for k in r.leaving[: args.show]:
        print(f"  - {k}")
    return 0


def _ops_config(args: argparse.Namespace, every_problem: bool = False):  # type: ignore[no-untyped-def]
    """The configuration for an operations command (``--data-dir`` overrides EBW_DATA_DIR);
    ``every_problem``: a bad configuration is reported a line per bad setting."""
    import dataclasses

    if every_problem:
        from . import config

        bad = config.problems()
        for exc in bad:
            print(f"ebw: configuration error: {exc}", file=sys.stderr)
        if bad:
            return None
    cfg = _load_config()
    if cfg is not None and getattr(args, "data_dir", None):
        cfg = dataclasses.replace(cfg, data_dir=args.data_dir)
    return cfg


def _cmd_check(args: argparse.Namespace) -> int:
    from .ops import check

    cfg = _ops_config(args, every_problem=True)
    if cfg is None:
        return 2
    problems, notes = check(cfg)
    for line in problems:
        print(f"ebw check: {line}", file=sys.stderr)
    if problems:
        return 2
    print("configuration OK; " + "; ".join(notes))
    return 0


def _cmd_backup(args: argparse.Namespace) -> int:
    from .errors import EbwError
    from .ops import backup

    cfg = _ops_config(args)
    if cfg is None:
        return 2
    try:
        m = backup(cfg.data_dir, args.dest, studies=not args.no_studies)
    except EbwError as exc:
        print(f"ebw backup: {exc}", file=sys.stderr)
        return 1
    st = m["stats"]
    active = sum(e["active"] for e in st["endpoints"].values())
    studies = (
        f"{m['studies']['files']} study files ({m['studies']['bytes'] / 1048576:.1f} MiB)"
        if m["studies"]["included"]
        else "study files not included"
    )
    print(
        f"backup of {m['source']} taken at {m['snapshot_at_utc']} into {args.dest}: "
        f"LMDB {m['lmdb_bytes'] / 1048576:.1f} MiB (compacted), {studies}; "
        f"{len(st['endpoints'])} endpoints, {active} active encounters, {st['journal_entries']} journal entries"
    )
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from .errors import EbwError
    from .ops import restore

    cfg = _ops_config(args)
    if cfg is None:
        return 2
    try:
        r = restore(cfg.data_dir, args.src, cfg.lmdb_map_size_mb)
    except EbwError as exc:
        print(f"ebw restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored the backup taken at {r['backup_taken']} into {r['data_dir']} ({r['study_files']} study files)")
    if r["previous"]:
        print(f"the previous data dir is kept at {r['previous']}")
    for name, (old, new) in r["counters_raised"].items():
        print(f"counter {name} carried forward from {old} to {new} (never issued twice)")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    import json

    from .errors import EbwError
    from .ops import format_stats, stats

    cfg = _ops_config(args)
    if cfg is None:
        return 2
    try:
        s = stats(cfg.data_dir)
    except EbwError as exc:
        print(f"ebw stats: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(s, indent=2, sort_keys=True) if args.json else "\n".join(format_stats(cfg.data_dir, s)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ebw",
        description="EBW: Encounter Based Worklist server (HL7 v2 ADT over MLLP in, DICOM Modality Worklist out). "
        "Configured with EBW_* environment variables: see 'ebw config'.",
    )
    p.add_argument("--version", action="version", version=f"ebw {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("serve", help="run the server in the foreground")
    s.set_defaults(func=_cmd_serve)
    s = sub.add_parser("send", help="send HL7 messages from files over MLLP and print the ACKs")
    s.add_argument(
        "files", nargs="+", metavar="FILE", help="HL7 file(s): MLLP-framed or one segment per line; - for stdin"
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=2575)
    s.add_argument("--timeout", type=float, default=30.0)
    s.set_defaults(func=_cmd_send)
    s = sub.add_parser("replay", help="rebuild the encounter index from the journal (server stopped)")
    s.add_argument("--dry-run", action="store_true", help="rebuild in a temporary directory and only report")
    s.set_defaults(func=_cmd_replay)
    s = sub.add_parser("explain", help="why a patient's or visit's encounters are (not) on each worklist")
    s.add_argument("--patient", metavar="ID", help="Patient ID (PID-3)")
    s.add_argument("--visit", metavar="NUMBER", help="visit number (PV1-19) or account number (PID-18)")
    s.set_defaults(func=_cmd_explain)
    s = sub.add_parser("dry-run", help="replay the journal against candidate curation rules and compare")
    s.add_argument("rules", metavar="RULES", help="candidate curation JSON, or a .json file holding it")
    s.add_argument("--endpoint", default="default")
    s.add_argument("--step-minutes", type=float, default=60.0, help="sampling interval of the list size")
    s.add_argument("--show", type=int, default=20, help="encounters listed as entering/leaving, at most")
    s.set_defaults(func=_cmd_dry_run)
    s = sub.add_parser("config", help="list every EBW_* variable with its default and rule")
    s.add_argument("--check", action="store_true", help="check the current environment and exit")
    s.add_argument("--env-file", action="store_true", help="print an example environment file (deploy/systemd/ebw.env)")
    s.set_defaults(func=_cmd_config)
    data_dir_help = "data dir to use instead of EBW_DATA_DIR"
    s = sub.add_parser(
        "check", help="validate the configuration without starting: values, data dir, ports free, LMDB opens"
    )
    s.add_argument("--data-dir", help=data_dir_help)
    s.set_defaults(func=_cmd_check)
    s = sub.add_parser("backup", help="consistent hot copy of the LMDB store (and study files) while serving")
    s.add_argument("dest", metavar="DEST", help="a new or empty directory")
    s.add_argument("--no-studies", action="store_true", help="copy the LMDB store only, not the received DICOM files")
    s.add_argument("--data-dir", help=data_dir_help)
    s.set_defaults(func=_cmd_backup)
    s = sub.add_parser("restore", help="restore a backup into the data dir (server stopped; the old data is kept)")
    s.add_argument("src", metavar="SRC", help="a directory made by 'ebw backup'")
    s.add_argument("--data-dir", help=data_dir_help)
    s.set_defaults(func=_cmd_restore)
    sub.add_parser("bench", help="the load-test harness: ebw bench {adt,cfind,mixed,peers,compare,ceiling} --help")
    s = sub.add_parser("stats", help="counts from the store: endpoints, encounters, journal, exams, map use")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--data-dir", help=data_dir_help)
    s.set_defaults(func=_cmd_stats)
    return p


def _bench(argv: list[str]) -> int:
    """``ebw bench ...``: the load harness in ``bench/`` (a source checkout's top level)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "harness.py").exists():
        print("ebw bench: the harness ships with the source tree (bench/); run it from a checkout", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.harness import main as bench_main

    return bench_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
