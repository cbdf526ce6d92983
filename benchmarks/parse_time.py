"""Parse time at survey scale: `snakemake -n` over 1, 7 and 30 days of raw files.

    .venv/bin/python benchmarks/parse_time.py [--days 1 7 30] [--keep DIR]

For each span it writes a raw/ listing of empty files (names only matter at
parse time: one observation every 309.237645 s, 16 subbands whose names differ
by 0-2 s, about 280 observations a day), then measures:

- own:   the project's parse-time work, in a fresh Python: Snakemake reads
         the Snakefile (config, includes, everything rules/*.smk do at the top
         level: listing raw/, grouping, calibration plan, mosaic wiring,
         targets) without building the DAG, timed per include, with the
         package modules it needs imported beforehand and timed apart;
         listing and grouping are also timed alone;
- real:  `snakemake -n` of the workflow (wall time, peak memory, and the time
         until "Building DAG of jobs" = start-up + reading the Snakefile);
- floor: `snakemake -n` of a trivial Snakefile with the same jobs, the same
         dependencies and the same existing input files, but no project code:
         what Snakemake itself needs for this DAG. It is made from the job
         list that the real dry run prints.

Targets (issue 8): own < 2 s for 30 days; real within 1.3x of floor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
CADENCE_S = 309.237645
START = datetime(2025, 6, 1, 0, 0, 0)
N_SUBBANDS = 16


# ------------------------------------------------------------------ raw listing


def make_raw(raw: Path, days: float, seed: int = 1) -> int:
    """Empty raw files for ``days`` of observations; returns the number of groups."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    n_groups = int(days * 86400 / CADENCE_S)
    for k in range(n_groups):
        t0 = START + timedelta(seconds=k * CADENCE_S)
        for sb in range(N_SUBBANDS):
            t = t0 + timedelta(seconds=rng.uniform(0.0, 2.0))
            name = f"{t:%Y-%m-%dT%H:%M:%S}_sb{sb:02d}.hdf5"
            os.close(os.open(raw / name, os.O_CREAT | os.O_WRONLY, 0o644))
    return n_groups


# ------------------------------------------------------------------ own work

# Reads the Snakefile (config, includes, every top-level statement of
# rules/*.smk) without building the DAG (`--list-rules`), timing each include.
# The project modules it imports are imported first and timed apart, so
# "parse" is the work itself. Writes JSON to argv[1].
READ_SNAKEFILE = textwrap.dedent(
    """
    import importlib, json, sys, time
    out, modules, args = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
    import snakemake.cli, snakemake.workflow as W
    t0 = time.perf_counter()
    for m in modules:
        importlib.import_module(m)
    imports_s = time.perf_counter() - t0
    includes = {}
    original = W.Workflow.include
    def include(self, snakefile, *a, **k):
        t = time.perf_counter()
        try:
            return original(self, snakefile, *a, **k)
        finally:
            name = str(getattr(snakefile, "get_path_or_uri", lambda: snakefile)())
            includes[name] = includes.get(name, 0.0) + time.perf_counter() - t
    W.Workflow.include = include
    try:
        snakemake.cli.main(args)
    except SystemExit:
        pass
    json.dump(dict(imports_s=imports_s, includes=includes,
                   modules=sorted(m for m in sys.modules if m.startswith("dsa110_contimg"))),
              open(out, "w"))
    """
)

# Listing and grouping alone, as rules/common.smk does them (names only).
LIST_AND_GROUP = textwrap.dedent(
    """
    import json, os, sys, time
    from dsa110_contimg.raw import grouping
    t0 = time.perf_counter()
    with os.scandir(sys.argv[1]) as entries:
        names = [e.name for e in entries if not e.is_dir()]
    t1 = time.perf_counter()
    g = grouping.group_files(names)
    sel = grouping.select_groups(g, "skip")
    t2 = time.perf_counter()
    print(json.dumps(dict(listing_s=t1 - t0, grouping_s=t2 - t1, groups=len(sel.groups))))
    """
)


def own_work(configs: list[Path], raw: Path, workdir: Path) -> dict:
    """Seconds the project's own code takes at parse time (see READ_SNAKEFILE)."""
    args = ["-s", str(REPO / "Snakefile"), "--list-rules", "--configfile", *map(str, configs)]
    result = workdir / "own.json"
    modules: list[str] = []
    for _ in range(2):  # the first pass learns which project modules the Snakefile imports
        subprocess.run([sys.executable, "-c", READ_SNAKEFILE, str(result), json.dumps(modules), *args],
                       cwd=workdir, capture_output=True, text=True, check=True)
        found = json.loads(result.read_text())
        if found["modules"] == modules:
            break
        modules = found["modules"]
    steps = json.loads(subprocess.run([sys.executable, "-c", LIST_AND_GROUP, str(raw)],
                                      capture_output=True, text=True, check=True).stdout)
    snakefile = str(REPO / "Snakefile")
    return dict(
        imports_s=found["imports_s"],
        parse_s=found["includes"][snakefile],
        includes={Path(k).name: v for k, v in found["includes"].items() if k != snakefile},
        **steps,
    )


# ------------------------------------------------------------------ dry runs


def timed_run(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd``; wall time, peak RSS, time until 'Building DAG of jobs', job count."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t_dag = None
    lines = []
    for line in proc.stdout:
        if t_dag is None and line.startswith("Building DAG of jobs"):
            t_dag = time.perf_counter() - t0
        lines.append(line)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    text = "".join(lines)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    total = re.search(r"^total\s+(\d+)", text, re.M)
    return dict(wall_s=wall, parse_s=t_dag, dag_s=wall - (t_dag or 0), peak_mb=usage.ru_maxrss / 1024,
                jobs=int(total.group(1)) if total else 0, output=text)


def real_cmd(configs: list[Path], *extra: str) -> list[str]:
    return [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-n", *extra,
            "--configfile", *map(str, configs)]


FLOOR_SNAKEFILE = textwrap.dedent(
    '''
    # Trivial rules with the jobs, dependencies, input files, outputs, logs and
    # benchmarks of the real workflow's dry run, and no project code.
    import json

    JOBS = json.load(open("floor-jobs.json"))  # rule -> [[inputs...], ...]


    rule all:
        input:
            json.load(open("floor-sinks.json")),
    '''
)


def _floor_rule(rule: str, n_outputs: int, log: bool, benchmark: bool) -> str:
    outputs = ", ".join(f'"floor/{rule}/{{i}}.{k}"' for k in range(n_outputs))
    return textwrap.dedent(
        f'''

        rule {rule}:
            input:
                lambda wc: JOBS["{rule}"][int(wc.i)],
            output:
                {outputs},
        '''
    ) + (f'    log:\n        "floor/logs/{rule}/{{i}}.log",\n' if log else "") + (
        f'    benchmark:\n        "floor/benchmarks/{rule}/{{i}}.tsv"\n' if benchmark else ""
    ) + '    shell:\n        "touch {output}"\n'


_JOB = re.compile(r"^rule (\w+):\n((?:    .*\n)+)", re.M)


def make_floor(workdir: Path, dry_run_output: str) -> int:
    """A Snakefile with the shape of the real DAG, from the job list a dry run prints."""
    jobs: dict[str, list[list[str]]] = defaultdict(list)
    shape: dict[str, tuple[int, bool, bool]] = {}
    producer: dict[str, str] = {}
    sinks: list[str] = []
    for rule, body in _JOB.findall(dry_run_output):
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, re.M))
        inputs = fields["input"].split(", ") if fields.get("input") else []
        if rule == "all":
            sinks = inputs
            continue
        outputs = fields["output"].split(", ")
        i = len(jobs[rule])
        jobs[rule].append(inputs)
        shape.setdefault(rule, (len(outputs), "log" in fields, "benchmark" in fields))
        for k, out in enumerate(outputs):
            producer[out] = f"floor/{rule}/{i}.{k}"
    floor_jobs = {rule: [[producer.get(f, f) for f in inputs] for inputs in lst] for rule, lst in jobs.items()}
    (workdir / "floor-jobs.json").write_text(json.dumps(floor_jobs))
    (workdir / "floor-sinks.json").write_text(json.dumps([producer.get(f, f) for f in sinks]))
    (workdir / "Snakefile.floor").write_text(
        FLOOR_SNAKEFILE + "".join(_floor_rule(rule, *shape[rule]) for rule in sorted(floor_jobs))
    )
    return sum(len(v) for v in floor_jobs.values()) + 1


def job_stats(text: str) -> dict[str, int]:
    block = text.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


# ------------------------------------------------------------------ main


def bench(days: float, base: Path, repeat: int = 1) -> dict:
    work = base / f"{days:g}d"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_groups = make_raw(work / "raw", days)
    t_make = time.perf_counter() - t0
    cfg = work / "bench.yaml"
    cfg.write_text(f"raw_dir: {work / 'raw'}\nresults_dir: {work / 'results'}\n")
    configs = [REPO / "config" / "config.yaml", cfg]

    # Real and floor runs alternate, and the fastest of each counts: this
    # machine may be shared, and load only ever adds time.
    own = real = floor = None
    for i in range(repeat):
        o = own_work(configs, work / "raw", work)
        own = o if own is None or o["parse_s"] < own["parse_s"] else own
        r = timed_run(real_cmd(configs), work)
        if i == 0:
            floor_jobs = make_floor(work, r["output"])
        real = r if real is None or r["wall_s"] < real["wall_s"] else real
        f = timed_run([str(SNAKEMAKE), "-s", "Snakefile.floor", "-n", "--workflow-profile", "none"], work)
        floor = f if floor is None or f["wall_s"] < floor["wall_s"] else floor
    assert floor["jobs"] == real["jobs"] == floor_jobs, (floor["jobs"], real["jobs"], floor_jobs)
    return dict(days=days, groups=n_groups, files=n_groups * N_SUBBANDS, make_raw_s=t_make,
                load=os.getloadavg()[0], own=own,
                real={k: v for k, v in real.items() if k != "output"},
                floor={k: v for k, v in floor.items() if k != "output"},
                jobs_by_rule=job_stats(real["output"]))


def report(r: dict) -> str:
    own, real, floor = r["own"], r["real"], r["floor"]
    ratio = real["wall_s"] / floor["wall_s"]
    lines = [
        f"{r['days']:g} day(s): {r['groups']} groups, {r['files']} files "
        f"(made in {r['make_raw_s']:.1f} s); jobs {real['jobs']} {r['jobs_by_rule']}; "
        f"load average {r['load']:.1f} on {os.cpu_count()} CPUs",
        f"  own parse-time work  {own['parse_s']:6.2f} s  reading the Snakefile with the project modules "
        f"already imported (listing {own['listing_s']:.2f}, grouping {own['grouping_s']:.2f}; "
        + ", ".join(f"{k} {v:.2f}" for k, v in own["includes"].items())
        + f"); importing those modules {own['imports_s']:.2f} s",
        f"  snakemake -n         {real['wall_s']:6.2f} s  peak {real['peak_mb']:5.0f} MB  "
        f"(until 'Building DAG' {real['parse_s']:.2f} s, DAG and listing {real['dag_s']:.2f} s)",
        f"  floor (trivial)      {floor['wall_s']:6.2f} s  peak {floor['peak_mb']:5.0f} MB  "
        f"(until 'Building DAG' {floor['parse_s']:.2f} s, DAG and listing {floor['dag_s']:.2f} s), "
        f"{floor['jobs']} jobs",
        f"  ratio real/floor     {ratio:6.2f}   "
        f"[targets: own < 2 s: {'ok' if own['parse_s'] < 2 else 'MISSED'}; "
        f"ratio <= 1.3: {'ok' if ratio <= 1.3 else 'MISSED'}]",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, nargs="+", default=[1, 7, 30])
    ap.add_argument("--keep", type=Path, help="build the listings here and keep them (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the fastest counts")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="parse-time-") as tmp:
        base = args.keep or Path(tmp)
        for days in args.days:
            r = bench(days, base, args.repeat)
            results.append(r)
            print(report(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
