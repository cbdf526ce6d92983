"""``contimg``: the pipeline's command line, beside Snakemake.

Subcommands import their heavy modules only when chosen, so ``contimg
groups`` answers instantly and works even where the simulator or the
database code cannot be imported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import yaml

from dsa110_contimg.raw import grouping

from . import naming
from .config import ConfigError, load_config, validate_config

#: The module behind ``contimg simulate``: provides add_arguments(parser) and main(args) -> int.
SIMULATOR = "dsa110_contimg.sim.observation"

#: Errors that mean "bad input", shown as one line with exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    grouping.GroupingError,
    naming.RawNameError,
    OSError,
)


def _add_simulate(sub: argparse._SubParsersAction, chosen: bool) -> None:
    help_text = "write simulated raw UVH5 subband files"
    p = sub.add_parser("simulate", help=help_text, description=help_text)
    if chosen:  # import the simulator (numpy, pyuvdata, astropy ...) only when used
        simulator = importlib.import_module(SIMULATOR)
        simulator.add_arguments(p)
        p.set_defaults(func=simulator.main)


def _add_groups(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "groups",
        help="list the observations in a raw folder",
        description="Group the raw files of a folder by name (nothing is opened) and list the "
        "groups, the incomplete ones and the files that are not observations.",
    )
    p.add_argument("raw_dir", help="folder of YYYY-MM-DDTHH:MM:SS_sbNN.hdf5 files")
    p.add_argument(
        "--config", help="take grouping.tolerance_s and n_subbands from this config (default: schema defaults)"
    )
    p.set_defaults(func=cmd_groups)


def _add_db(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="the product database")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    sync = db_sub.add_parser(
        "sync",
        help="make the database agree with the files",
        description="Register every product sidecar and raw file, mark deleted products gone.",
    )
    sync.add_argument("--config", default="config/config.yaml", help="pipeline config (default: %(default)s)")
    sync.add_argument(
        "--full", action="store_true",
        help="register every product again, even those whose sidecar and file are unchanged",
    )  # fmt: skip
    sync.set_defaults(func=cmd_db_sync)
    check = db_sub.add_parser(
        "check",
        help="check the database file's integrity (SQLite integrity_check); exit 1 on a problem",
        description="Run SQLite's integrity check over every page of the product database and "
        "list what is wrong. Exit 0: sound; 1: damaged (move it aside and rebuild it with `contimg "
        "db sync`: files are the truth); 2: cannot open it.",
    )
    check.add_argument("--config", default="config/config.yaml", help="pipeline config (default: %(default)s)")
    check.set_defaults(func=cmd_db_check)
    upgrade = db_sub.add_parser(
        "upgrade",
        help="bring the database schema to this software's revision",
        description="Migrate the product database (from any earlier revision, or empty) to the "
        "schema revision this software writes. Run it with no pipeline job running.",
    )
    upgrade.add_argument("--config", default="config/config.yaml", help="pipeline config (default: %(default)s)")
    upgrade.set_defaults(func=cmd_db_upgrade)


def _iso_time(text: str):
    """An argparse type: an ISO date or UTC time."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or time (YYYY-MM-DD[THH:MM:SS])") from None


def _add_products(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("products", help="find products in the database")
    products_sub = p.add_subparsers(dest="products_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="config/config.yaml", help="pipeline config (default: %(default)s)")
    common.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")

    listing = products_sub.add_parser(
        "list",
        parents=[common],
        help="list products, filtered",
        description="List products by kind, observation time, declination, grade and status. "
        "Time and declination are the product's own (e.g. a caltable's transit) or its group's.",
    )
    listing.add_argument("--kind", help="product kind (ms, caltable, calibrated, image, photometry, ...)")
    listing.add_argument("--since", type=_iso_time, help="observed at or after this UTC date/time")
    listing.add_argument("--until", type=_iso_time, help="observed before this UTC date/time")
    listing.add_argument("--dec", type=float, help="declination (deg), matched within --dec-tol")
    listing.add_argument("--dec-tol", type=float, default=1.0, help="declination tolerance, deg (default: %(default)s)")
    listing.add_argument("--grade", choices=("good", "marginal", "bad"), help="QA grade (images, mosaics)")
    listing.add_argument(
        "--status", choices=("current", "gone", "active", "retired"),
        help="current/gone (file exists or was deleted); active/retired (calibrations)",
    )  # fmt: skip
    listing.add_argument("--group", help="observation group id")
    listing.set_defaults(func=cmd_products_list)

    show = products_sub.add_parser(
        "show",
        parents=[common],
        help="one product or raw file: what it was made from and what was made from it",
    )
    show.add_argument("path", help="product or raw file path")
    show.set_defaults(func=cmd_products_show)

    night = products_sub.add_parser(
        "night",
        parents=[common],
        help="what happened to one UTC day's observations",
        description="Groups seen, converted, calibrated, imaged and failed (with the reasons "
        "from the job runs) for the observations of one UTC date.",
    )
    night.add_argument("date", type=_iso_time, help="YYYY-MM-DD (UTC)")
    night.set_defaults(func=cmd_products_night)


def _add_calibration(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transits",
        help="calibrator transits: now and next (no arguments), or over a time range",
        description="Without --start/--end: the current LST, the calibrator in the beam now (if any) "
        "and the next transits at the configured declination (pointing.dec_deg and "
        "calibration.dec_tolerance_deg of --config, or --dec/--tolerance). With --start and --end: "
        "transit times of the catalogue calibrators within a declination tolerance of the pointing "
        "declination (UTC), and whether each falls in an observation in RAW_DIR.",
    )
    p.add_argument("--start", type=_iso_time, help="UTC start (YYYY-MM-DD[THH:MM:SS])")
    p.add_argument("--end", type=_iso_time, help="UTC end")
    p.add_argument("--dec", type=float, help="pointing declination, deg (default: the config's)")
    p.add_argument("--tolerance", type=float,
                   help="declination tolerance, deg (default: the config's calibration.dec_tolerance_deg)")
    p.add_argument("--all", action="store_true",
                   help="list every usable calibrator, however faint in the beam (no calibrator_min_apparent_jy)")
    p.add_argument("--raw-dir", help="also name the observation group holding each transit")
    p.add_argument("--config", default="config/config.yaml",
                   help="config for the declination when --dec is not given (default: %(default)s)")
    p.add_argument("--now", type=_iso_time, help="UTC time to look from (default: the clock)")
    p.add_argument("--next", type=int, default=5, help="how many next transits (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="the now-and-next view as JSON")
    p.set_defaults(func=cmd_transits)
    c = sub.add_parser("calibration", help="calibration validity windows")
    c_sub = c.add_subparsers(dest="calibration_command", required=True, metavar="COMMAND")
    at = c_sub.add_parser(
        "at",
        help="which calibration covers a time",
        description="The calibration solutions (product database) whose validity window covers TIME, "
        "nearest transit first, the one the pipeline uses (nearest that passed QA) marked *, and how "
        "many overlap. --json adds the whole timeline (every solution, gap or overlap to the next).",
    )
    at.add_argument("time", type=_iso_time, help="UTC time (YYYY-MM-DD[THH:MM:SS])")
    at.add_argument("--config", default="config/config.yaml", help="pipeline config (default: %(default)s)")
    at.add_argument("--json", action="store_true", help="answer and timeline as JSON")
    at.set_defaults(func=cmd_calibration_at)
    f = sub.add_parser(
        "calflux",
        help="calibrator flux monitoring: measured against catalogue flux, with alerts",
        description="Print results/calibration/calibrator_flux.csv; exit 1 when a calibrator's "
        "flux is off by more than calibration.flux_alert_fraction.",
    )
    f.add_argument("--config", default="config/config.yaml", help="pipeline config (default: %(default)s)")
    f.set_defaults(func=cmd_calflux)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="pipeline configuration")
    cfg_sub = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = cfg_sub.add_parser(
        "check",
        help="validate a config file",
        description="Validate a config file against the schema; with --show print it with defaults filled in.",
    )
    check.add_argument("file")
    check.add_argument("--show", action="store_true", help="print the full config, defaults included")
    check.set_defaults(func=cmd_config_check)


def _add_check(sub: argparse._SubParsersAction) -> None:
    help_text = "check that a run can start: config, raw_dir and its groups, database, catalogue"
    p = sub.add_parser("check", help=help_text, description=help_text.capitalize() + " (what the workflow's "
                       "onstart does once per run); exit 1 with the problem named.")
    p.add_argument("--config", default="config/config.yaml", help="pipeline config (default: %(default)s)")
    p.set_defaults(func=cmd_check)


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="pipeline health: per night, latest calibration, alerts (exit 1 on an alert)",
        description="Groups seen, incomplete, converted, calibrated, imaged and failed (with the "
        "reasons) per UTC night, the latest calibration and its validity, and alerts with the "
        "thresholds of the config's status section. Exit status: 0 healthy, 1 an alert is "
        "active, 2 an error (bad config, unreachable database).",
    )
    p.add_argument("--config", default="config/config.yaml", help="pipeline config (default: %(default)s)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="the report as JSON (see dsa110_contimg.monitoring.status)")
    out.add_argument("--prometheus", action="store_true", help="the figures in the Prometheus text format")
    p.add_argument("--nights", type=int, help="nights to show and check (default: status.nights)")
    p.add_argument(
        "--now", type=_iso_time,
        help="UTC time ages are measured at (default: the newest observation; data age: the wall clock)",
    )  # fmt: skip
    p.set_defaults(func=cmd_status)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="one rolling run: the workflow over recent nights, then status, metrics and alerts",
        description="Run the workflow as a rolling run (config section run: a window of recent "
        "nights, groups still being written wait, failed groups are held back so the fan-ins run "
        "on what succeeded), then write <results_dir>/run/status.json and the Prometheus metrics "
        "(run.metrics_file) and send new or resolved alerts (section notify). For a systemd timer "
        "or cron (ops/). Exit status: 0 the workflow finished (failures are alerts), 1 snakemake "
        "failed, 2 a bad config, 3 another run holds the lock. Arguments after -- go to snakemake.",
    )
    p.add_argument("--config", action="append", metavar="FILE",
                   help="config file, repeatable, merged in order (default: config/config.yaml)")
    p.add_argument("--snakefile", help="the workflow (default: ./Snakefile, else the package's source tree)")
    p.add_argument("--retry-failed", action="store_true", help="plan the groups held back by a failure again now")
    p.add_argument("-n", "--dry-run", action="store_true", help="only show the jobs (snakemake -n); no status or alerts")
    p.add_argument("snakemake_args", nargs="*", help="extra snakemake arguments (after --)")
    p.set_defaults(func=cmd_run)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser; ``argv`` tells whether the simulator must be loaded."""
    parser = argparse.ArgumentParser(prog="contimg", description="DSA-110 continuum pipeline tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_simulate(sub, chosen=bool(argv) and argv[0] == "simulate")
    _add_groups(sub)
    _add_db(sub)
    _add_products(sub)
    _add_calibration(sub)
    _add_config(sub)
    _add_check(sub)
    _add_status(sub)
    _add_run(sub)
    return parser


# ---------------------------------------------------------------- commands


def cmd_groups(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else validate_config({})
    found = grouping.group_files(
        grouping.raw_names(args.raw_dir), tolerance_s=cfg["grouping"]["tolerance_s"], n_subbands=cfg["grouping"]["n_subbands"]
    )
    n = cfg["grouping"]["n_subbands"]
    for group in found.groups:
        state = "complete  " if group.complete else "INCOMPLETE"
        line = f"{group.id}  {state}  {len(group.files):2d}/{n}"
        if not group.complete:
            line += f"  {group.problem()}"
        print(line)
    for reason in found.invalid.values():
        print(f"malformed   {reason}")
    for name in sorted(found.ignored):
        print(f"ignored     {name}")
    print(
        f"{len(found.groups)} group(s): {len(found.complete)} complete, {len(found.incomplete)} incomplete; "
        f"{len(found.invalid)} malformed name(s); {len(found.ignored)} other file(s)"
    )
    return 0


def _pointing(args: argparse.Namespace) -> tuple[float, float, dict]:
    """Declination, tolerance and the calibration config: the options, else the config's.

    With --dec and no config file the schema's defaults choose the calibrators.
    """
    if os.path.exists(args.config):
        cfg = load_config(args.config)
    elif args.dec is None:
        raise ConfigError(f"no --dec and no config {args.config}: give --dec or --config")
    else:
        cfg = validate_config({})
    dec = cfg["pointing"]["dec_deg"] if args.dec is None else args.dec
    tolerance = cfg["calibration"]["dec_tolerance_deg"] if args.tolerance is None else args.tolerance
    return dec, tolerance, cfg["calibration"]


def cmd_transits(args: argparse.Namespace) -> int:
    from dsa110_contimg.calibration.calibrators import load_calibrators
    from dsa110_contimg.calibration.transits import calibrator_transits

    if (args.start is None) != (args.end is None):
        raise ConfigError("give both --start and --end, or neither (now and next)")
    dec, tolerance, cfg = _pointing(args)
    choice = {"catalogue": load_calibrators(cfg), "min_apparent_jy": 0.0 if args.all else cfg["calibrator_min_apparent_jy"]}
    if args.start is None:
        from .monitoring import pointing

        view = pointing.now_view(args.now or datetime.now(UTC), dec, tolerance, args.next, **choice)
        print(json.dumps(view, indent=1) if args.json else pointing.render(view))
        return 0
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (args.start, args.end))
    table = calibrator_transits(start, end, dec, tolerance, **choice)
    if args.raw_dir:
        import numpy as np

        from dsa110_contimg.calibration.plan import group_start_jd

        from .telescope import OBSERVATION_S

        starts = group_start_jd(g.id for g in grouping.group_files(grouping.raw_names(args.raw_dir)).complete)
        ids = sorted(starts, key=starts.get)
        first = np.array([starts[g] for g in ids])
        # As the calibration plan does: the latest observation that began before the transit.
        i = np.searchsorted(first, table["transit_jd"].to_numpy(), side="right") - 1
        table["group"] = [
            ids[k] if k >= 0 and jd < first[k] + OBSERVATION_S / 86400 else ""
            for k, jd in zip(i, table["transit_jd"])
        ]
    if table.empty:
        print(f"no calibrator within {tolerance} deg of dec {dec} transits in that range")
        return 0
    print(table.drop(columns="transit_jd").to_string(index=False))
    return 0


def cmd_calibration_at(args: argparse.Namespace) -> int:
    """Exit 0 when a passing calibration covers the time, 1 when none does."""
    from .db import Database
    from .monitoring import validity

    with Database.from_config(load_config(args.config)) as database:
        sols = validity.solutions(database)
    answer = validity.at(sols, args.time)
    if args.json:
        print(json.dumps({**answer, "timeline": validity.timeline(sols)}, indent=1))
    else:
        print(validity.render(answer))
    return 0 if answer["chosen"] else 1


def cmd_calflux(args: argparse.Namespace) -> int:
    import pandas as pd

    cfg = load_config(args.config)
    path = naming.calflux_path(cfg["results_dir"])
    if not os.path.exists(path):
        print(f"{path} does not exist yet: no calibrator has been solved (snakemake {path})")
        return 0
    table = pd.read_csv(path)
    print(table.to_string(index=False))
    alerts = table[table["alert"].astype(bool)]
    for row in alerts.itertuples():
        print(f"ALERT {row.calibrator} ({row.calgroup}): {row.note}")
    return 1 if len(alerts) else 0


def cmd_db_sync(args: argparse.Namespace) -> int:
    from . import db  # SQLAlchemy and the drivers only when needed

    cfg = load_config(args.config)
    database = db.Database.from_config(cfg)
    try:
        report = database.sync(
            cfg["results_dir"], cfg["raw_dir"], tolerance_s=cfg["grouping"]["tolerance_s"], full=args.full
        )
    finally:
        database.close()
    print(report)
    return 1 if report.problems else 0


def cmd_db_check(args: argparse.Namespace) -> int:
    from . import db

    cfg = load_config(args.config)
    with db.Database.from_config(cfg, check_schema=False) as database:
        problems = database.integrity_problems()
        where = database.masked_url
    if not problems:
        print(f"{where}: integrity check ok")
        return 0
    print(f"{where}: damaged ({len(problems)} problem(s)); move it aside and run `contimg db sync` to rebuild it")
    for problem in problems[:50]:
        print(f"  {problem}")
    return 1


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from . import db

    cfg = load_config(args.config)
    with db.Database.from_config(cfg, check_schema=False) as database:
        before, after = database.upgrade()
        where = database.masked_url
    if before == after:
        print(f"{where}: already at schema revision {after}")
    else:
        print(f"{where}: upgraded from revision {before or 'none (empty)'} to {after}")
    return 0


def _products_db(args: argparse.Namespace):
    from . import db

    return db.Database.from_config(load_config(args.config))


def cmd_products_list(args: argparse.Namespace) -> int:
    from .db import present

    filters = dict(
        status=args.status, since=args.since, until=args.until, dec=args.dec,
        dec_tol=args.dec_tol, grade=args.grade, group=args.group,
    )  # fmt: skip
    with _products_db(args) as database:
        rows = database.list_products(args.kind, **filters)
    print(present.products(rows, args.format))
    return 0


def cmd_products_show(args: argparse.Namespace) -> int:
    from .db import present

    with _products_db(args) as database:
        down = database.provenance(args.path)
        up = database.derived(args.path)
        product = database.get_product(args.path)
    print(present.show(product, down, up, args.format))
    return 0


def cmd_products_night(args: argparse.Namespace) -> int:
    from .db import present
    from .monitoring import night

    cfg = load_config(args.config)
    day = args.date.date()
    with _products_db(args) as database:
        summary = database.night(day)
    raw, _why = night.raw_groups(cfg)
    print(present.night(night.merge(summary, raw, day, cfg["grouping"]["n_subbands"]), args.format))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    if args.show:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
    else:
        print(f"{args.file}: valid")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from dsa110_contimg import run_plan

    cfg = load_config(args.config)
    try:
        plan = run_plan.build(cfg)
        checked = run_plan.preflight(cfg)
    except run_plan.PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for note in plan.notes:
        print(note)
    print(f"raw_dir {cfg['raw_dir']}: {len(plan.groups)} complete observation(s), "
          f"{len(plan.calibration.calgroups)} calibrator transit(s); {len(plan.targets())} target product(s)")
    for line in checked:
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dsa110_contimg.monitoring import status

    if args.nights is not None and args.nights < 1:
        raise ConfigError(f"--nights must be at least 1, not {args.nights}")
    report = status.gather(load_config(args.config), nights=args.nights, now=args.now)
    if args.json:
        print(status.render_json(report))
    elif args.prometheus:
        print(status.render_prometheus(report), end="")
    else:
        print(status.render_text(report))
    return status.exit_code(report)


def _load_configs(files: Sequence[str]) -> dict:
    """Config files merged in order (as Snakemake merges several --configfile), validated."""
    from .config import _merge

    merged: dict = {}
    for path in files:
        try:
            with open(path) as f:
                part = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
        if not isinstance(part, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(part).__name__}")
        merged = _merge(merged, part)
    return validate_config(merged)


def cmd_run(args: argparse.Namespace) -> int:
    from .rolling import lock, run

    files = args.config or ["config/config.yaml"]
    config = _load_configs(files)
    try:
        result = run.rolling_run(config, files, snakefile=args.snakefile, retry_failed=args.retry_failed,
                                 dry_run=args.dry_run, extra_args=args.snakemake_args)
    except lock.RunLockedError as err:
        print(f"contimg run: {err}", file=sys.stderr)
        return run.EXIT_LOCKED
    return result.exit_code()


def _user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus the database's own, when its module can be imported."""
    if "dsa110_contimg.db" in sys.modules:
        db = sys.modules["dsa110_contimg.db"]
        return USER_ERRORS + (db.DatabaseError, db.NotFoundError, db.UnknownKindError)
    return USER_ERRORS


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        if isinstance(err, _user_errors()):
            one_line = " ".join(str(err).split())  # driver messages span lines
            print(f"contimg: error: {one_line}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
