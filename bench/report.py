"""Turns the raw runs of bench/run.py into figures: medians (min-max), ratios against their
targets, CPU per item per process, RSS; then a text table and a PNG chart.

A ratio is computed per repeat from the two measurements taken side by side in it, then
summarised over the repeats; a target is met when the median meets it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

PROCESSES = ("client", "server", "master", "replica", "watcher")
BATCH_GET_TARGET = 50_000  # keys/s
RSS_LIMIT_MB = 150.0
FLAT_TOLERANCE_MB = 10.0
UNITS = {"ingest": "records", "health": "calls", "Get": "calls", "Put": "calls",
         "BatchGet": "keys", "SELECT": "rows", "memory": "records", "watch": "events",
         "fanout": "events", "1 process": "calls", "2 processes": "calls"}
INGEST_WATCHERS = 10  # bench/run.py's second watched ingest
# (name, numerator, denominator, target): a ratio of rates measured in the same repeat.
RATIO_TARGETS = [
    ("ingest: kvgrpc stream / LOAD DATA", "ingest kvgrpc stream", "ingest LOAD DATA", 0.75),
    ("ingest, a named load: / LOAD DATA", "ingest kvgrpc stream, named load", "ingest LOAD DATA",
     0.75),
    ("ingest, a watcher of all keys on: / LOAD DATA", "ingest kvgrpc stream + watcher",
     "ingest LOAD DATA", 0.75),
    (f"ingest, {INGEST_WATCHERS} watchers of all keys: / LOAD DATA",
     f"ingest kvgrpc stream + {INGEST_WATCHERS} watchers", "ingest LOAD DATA", 0.5),
    ("ingest, an idle watcher on: / LOAD DATA", "ingest kvgrpc stream + idle watcher",
     "ingest LOAD DATA", 0.75),
    ("Get / health Check, 1 thread", "Get x1", "health Check x1", 0.8),
    ("Get / health Check, 8 threads", "Get x8", "health Check x8", 0.6),
    ("Get / health Check, 32 threads", "Get x32", "health Check x32", 0.6),
    ("Put / health Check, 1 thread", "Put x1", "health Check x1", 0.5),
    ("Put / health Check, 8 threads", "Put x8", "health Check x8", 0.45),
    ("Put / health Check, 32 threads", "Put x32", "health Check x32", 0.6),
]
RATES_WITHOUT_TARGET = [
    ("ingest with a watcher / without", "ingest kvgrpc stream + watcher", "ingest kvgrpc stream"),
    (f"ingest with {INGEST_WATCHERS} watchers / without",
     f"ingest kvgrpc stream + {INGEST_WATCHERS} watchers", "ingest kvgrpc stream"),
    ("Get / direct SELECT on the replica, 1 thread", "Get x1", "SELECT replica x1"),
    ("Get 8 threads / direct SELECT 4 connections", "Get x8", "SELECT replica x4"),
] + [
    (f"{op} x{n}: 2 processes / 1", f"2 processes: {op} x{n}", f"1 process: {op} x{n}")
    for n in (8, 32) for op in ("health Check", "Get", "Put")
] + [
    (f"{op} / health Check x{n}, {p} process{'es' if p > 1 else ''}",
     f"{p} process{'es' if p > 1 else ''}: {op} x{n}",
     f"{p} process{'es' if p > 1 else ''}: health Check x{n}")
    for n in (8, 32) for op in ("Get", "Put") for p in (1, 2)
]


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def unit_of(name: str) -> str:
    return next(unit for prefix, unit in UNITS.items() if name.startswith(prefix))


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------


def summarise(raw: dict) -> dict:
    runs = raw["runs"]
    benchmarks = {name: summarise_benchmark(name, rs) for name, rs in runs.items()}
    checks = [ratio_check(runs, *spec) for spec in RATIO_TARGETS if spec[1] in runs]
    checks += [rate_check(runs, name) for name in runs if name.startswith("BatchGet")]
    memory = summarise_memory(runs["memory stream"]) if "memory stream" in runs else {}
    if memory:
        checks.append({"name": "memory: RSS flat and < 150 MB (client, server)", "kind": "memory",
                       "value": {p: memory[p]["peak"]["median"] for p in ("client", "server")},
                       "target": RSS_LIMIT_MB,
                       "met": all(memory[p]["met"] for p in ("client", "server"))})
    info = [ratio_check(runs, name, a, b, None) for name, a, b in RATES_WITHOUT_TARGET
            if a in runs and b in runs]
    latency = summarise_latency(runs["watch latency"]) if "watch latency" in runs else {}
    fan = summarise_fanout(runs["fanout watch"]) if "fanout watch" in runs else {}
    watched = {name: stats([r["extra"]["watcher_seconds"] for r in rs])
               for name, rs in runs.items() if rs and "watcher_seconds" in rs[0]["extra"]}
    return {"environment": raw["environment"], "benchmarks": benchmarks, "checks": checks,
            "informational_ratios": info, "memory": memory, "watch_latency": latency,
            "fanout": fan, "watcher_seconds": watched,
            "cpu_ceilings": cpu_ceilings(runs, raw["environment"].get("cpus") or 1)}


def cpu_ceilings(runs: dict, cpus: int) -> list[dict]:
    """For each ingest: the CPU all processes spent per record (client, server, master,
    replica, watchers), the rate at which that would fill every core, and that rate against
    LOAD DATA's measured rate (per repeat; medians): the best ratio the run's CPU per
    record allows on this machine, however the work were scheduled."""
    out = []
    for name, rs in runs.items():  # unary calls against the health Check at the same callers
        op, _, threads = name.rpartition(" x")
        health = runs.get(f"health Check x{threads}")
        if op not in ("Get", "Put") or not health:
            continue
        totals = [sum(r["cpu"].values()) / r["items"] * 1e6 for r in rs]
        floor = [sum(h["cpu"].values()) / h["items"] * 1e6 for h in health]
        out.append({
            "name": name, "cpu_us_per_record": stats(totals),
            "ceiling_per_s": stats([cpus / (t * 1e-6) for t in totals]),
            "used": stats([(r["items"] / r["seconds"]) / (cpus / (t * 1e-6)) for r, t in zip(rs, totals)]),
            "ceiling_vs_load_data": stats([f / t for f, t in zip(floor, totals)]),
            "versus": "health Check",
        })
    base = runs.get("ingest LOAD DATA")
    for name, rs in runs.items():
        if not name.startswith("ingest") or not base:
            continue
        totals = [sum(r["cpu"].values()) / r["items"] * 1e6 for r in rs]
        ceilings = [cpus / (t * 1e-6) for t in totals]
        out.append({
            "name": name, "cpu_us_per_record": stats(totals), "ceiling_per_s": stats(ceilings),
            "used": stats([(r["items"] / r["seconds"]) / c for r, c in zip(rs, ceilings)]),
            "ceiling_vs_load_data": stats([c / (b["items"] / b["seconds"]) for c, b in zip(ceilings, base)]),
        })
    return out


def summarise_fanout(runs: list[dict]) -> dict:
    """The fan-out run: events delivered, delivery time, server RSS, master connections."""
    extra = [r["extra"] for r in runs]
    most = lambda key: max(e["master_connections_max"].get(key, 0) for e in extra)  # noqa: E731
    return {
        "watches": extra[0]["watches"], "records": extra[0]["records"],
        "delivered": stats([r["items"] for r in runs]),
        "expected": extra[0]["watches"] * extra[0]["records"],
        "delivery_seconds": stats([r["seconds"] for r in runs]),
        "load_seconds": stats([e["load_seconds"] for e in extra]),
        "open_seconds": stats([e["open_seconds"] for e in extra]),
        "events_per_s": stats([r["items"] / r["seconds"] for r in runs]),
        "rss_before_mb": stats([e["rss_before_mb"] for e in extra]),
        "rss_peak_mb": stats([e["rss_peak_mb"] for e in extra]),
        "rss_end_mb": stats([e["rss_end_mb"] for e in extra]),
        "master_held_before": max(e["master_connections_before"]["held"] for e in extra),
        "master_held_max": most("held"), "binlog_dump_held_max": most("held_binlog_dump"),
        "master_total_max": most("total"), "binlog_dump_total_max": most("binlog_dump"),
        "resumes": sum(e["resumes"] for e in extra),
        "server_cancelled": sum(e.get("server_cancelled", 0) for e in extra),
        "cancelled_unopened": sum(e.get("cancelled_unopened", 0) for e in extra),
        "cancelled_after_events": sum(e.get("cancelled_after_events", 0) for e in extra),
    }


def summarise_latency(runs: list[dict]) -> dict:
    """Watch delivery, ms: after the Put returned, and since the Put was sent (median and
    99th percentile of each repeat, then summarised over repeats)."""
    figures = {}
    for key in ("after_reply_ms", "since_request_ms", "put_ms"):
        per_run = [sorted(r["extra"][key]) for r in runs]
        figures[key] = {
            "p50": stats([statistics.median(v) for v in per_run]),
            "p99": stats([v[min(len(v) - 1, int(0.99 * len(v)))] for v in per_run]),
        }
    figures["samples"] = len(runs[0]["extra"]["put_ms"])
    return figures


def summarise_benchmark(name: str, runs: list[dict]) -> dict:
    unit = unit_of(name)
    summary = {
        "unit": unit,
        "rate_per_s": stats([r["items"] / r["seconds"] for r in runs]),
        "seconds": stats([r["seconds"] for r in runs]),
        "items": stats([r["items"] for r in runs]),
        "cpu_us_per_item": {p: stats([r["cpu"][p] / r["items"] * 1e6 for r in runs])
                            for p in PROCESSES if p in runs[0]["cpu"]},
    }
    if unit == "keys":
        summary["calls_per_s"] = stats([r["calls"] / r["seconds"] for r in runs])
    return summary


def ratio_check(runs: dict, name: str, numerator: str, denominator: str,
                target: float | None) -> dict:
    ratios = [(a["items"] / a["seconds"]) / (b["items"] / b["seconds"])
              for a, b in zip(runs[numerator], runs[denominator])]
    value = stats(ratios)
    return {"name": name, "kind": "ratio", "value": value, "target": target,
            "met": None if target is None else value["median"] >= target}


def rate_check(runs: dict, name: str) -> dict:
    value = stats([r["items"] / r["seconds"] for r in runs[name]])
    threads = name.rsplit("x", 1)[1]
    return {"name": f"{name.split(' x')[0]} keys/s, {threads} thread{'s' if threads != '1' else ''}",
            "kind": "keys/s", "value": value, "target": BATCH_GET_TARGET,
            "met": value["median"] >= BATCH_GET_TARGET}


def rss_figures(samples: list[list[float]]) -> dict[str, float]:
    """start = the sample at 10% of the run (past interpreter start-up), peak, end."""
    if not samples:
        return {"start": float("nan"), "peak": float("nan"), "end": float("nan")}
    duration = samples[-1][0]
    start = next(mb for t, mb in samples if t >= 0.1 * duration)
    return {"start": start, "peak": max(mb for _, mb in samples), "end": samples[-1][1]}


def summarise_memory(runs: list[dict]) -> dict:
    memory: dict = {}
    for process in ("client", "server"):
        per_run = [rss_figures(r["extra"]["rss_samples"][process]) for r in runs]
        figures = {k: stats([f[k] for f in per_run]) for k in ("start", "peak", "end")}
        growth = max(f["peak"] - f["start"] for f in per_run)
        figures["growth_mb"] = growth
        figures["flat"] = growth <= FLAT_TOLERANCE_MB
        figures["met"] = figures["flat"] and figures["peak"]["max"] < RSS_LIMIT_MB
        memory[process] = figures
    memory["records"] = runs[0]["items"]
    memory["samples"] = min(len(r["extra"]["rss_samples"]["client"]) for r in runs)
    return memory


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


def fmt(value: dict, digits: int = 0, suffix: str = "") -> str:
    """'median' or, over several repeats, 'median (min-max)'."""
    f = f"{{:,.{digits}f}}"
    text = f.format(value["median"]) + suffix
    if value["min"] != value["max"]:
        text += f" ({f.format(value['min'])}-{f.format(value['max'])})"
    return text


def met_text(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "NOT MET")


def table(summary: dict) -> str:
    env = summary["environment"]
    size = env["size"]
    lines = [
        f"kvgrpc benchmark, size {size['name']}: {size['records']:,} records ingested, "
        f"{size['seconds']:g} s per unary/SELECT measurement, {env['repeat']} repeat(s); "
        "median (min-max) over repeats",
        f"{env['cpus']} CPUs; MariaDB {env['mariadb']}; Python {env['python']}; grpc {env['grpc']}",
        f"server driver: {env['server_driver']}; benchmark driver: {env['bench_driver']}",
        f"unary/BatchGet threads: {env['unary_channel']}; SELECT: {env['select_connections']}",
    ]
    if size["name"] == "small":
        lines.append("size small is a smoke test: short windows, indicative figures only")
    lines += [
        "",
        f"{'throughput':<36} {'per second':>30}  unit",
    ]
    for name, b in summary["benchmarks"].items():
        lines.append(f"{name:<36} {fmt(b['rate_per_s']):>30}  {b['unit']}"
                     + (f"  ({fmt(b['calls_per_s'])} calls/s)" if "calls_per_s" in b else ""))
    if "memory stream" in summary["benchmarks"]:
        lines.append("(memory stream: timed to the client's exit, i.e. committed on the master; "
                     "ingest: until the replica holds every record)")
    lines += ["", f"{'target':<46} {'value':>22} {'target':>10}  result"]
    for c in summary["checks"] + summary["informational_ratios"]:
        if c["kind"] == "memory":
            continue  # below, with the memory figures
        value = fmt(c["value"], 2) if c["kind"] == "ratio" else fmt(c["value"])
        target = "" if c["target"] is None else (f">= {c['target']:g}" if c["kind"] == "ratio"
                                                  else f">= {c['target']:,}")
        lines.append(f"{c['name']:<46} {value:>22} {target:>10}  {met_text(c['met'])}")
    lines += ["", "CPU per item, µs (median): client = the calling process (in-process clients: "
              "this benchmark process); /proc counts 10 ms ticks, so short runs are coarse",
              f"{'benchmark':<36} {'per':<7}" + "".join(f"{p:>10}" for p in PROCESSES)]
    for name, b in summary["benchmarks"].items():
        cpu = b["cpu_us_per_item"]
        lines.append(f"{name:<36} {b['unit'][:-1]:<7}"
                     + "".join(f"{cpu[p]['median']:>10.1f}" if p in cpu else f"{'-':>10}"
                               for p in PROCESSES))
    ceilings = summary.get("cpu_ceilings")
    if ceilings:
        lines += ["", f"CPU ceilings ({summary['environment'].get('cpus')} cores): all processes' "
                  "CPU per item; the rate that would keep every core busy; the share of it "
                  "reached; the best ratio this CPU per item allows (ingest: that rate / LOAD "
                  "DATA's measured rate; Get, Put: the health Check's CPU per call / theirs)",
                  f"{'benchmark':<36} {'µs/item':>10} {'ceiling/s':>12} {'reached':>8} "
                  f"{'best ratio':>18}"]
        for c in ceilings:
            lines.append(f"{c['name']:<36} {c['cpu_us_per_record']['median']:>10.1f} "
                         f"{c['ceiling_per_s']['median']:>12,.0f} {c['used']['median']:>8.2f} "
                         f"{c['ceiling_vs_load_data']['median']:>18.2f}")
    latency = summary.get("watch_latency")
    if latency:
        lines += ["", f"watch latency: {latency['samples']} Puts, each awaited by a watcher of "
                  "their prefix on the same server; ms",
                  f"{'':<36} {'median':>20} {'99th percentile':>20}"]
        for key, label in (("put_ms", "Put call (until committed)"),
                           ("after_reply_ms", "delivery after the Put returned"),
                           ("since_request_ms", "delivery since the Put was sent")):
            lines.append(f"{label:<36} {fmt(latency[key]['p50'], 2):>20} "
                         f"{fmt(latency[key]['p99'], 2):>20}")
    fan = summary.get("fanout")
    if fan:
        ok = fan["delivered"]["min"] == fan["expected"]
        lines += ["", f"fan-out: {summary['environment'].get('fanout', '')}, one server; "
                  "every watch must receive every event",
                  f"  delivered              {fmt(fan['delivered'])} of {fan['expected']:,} events "
                  f"{'(all)' if ok else '(NOT ALL)'}; streams reopened: {fan['resumes']} (of which "
                  f"after a CANCELLED the server sent: {fan['server_cancelled']}, "
                  f"{fan['cancelled_unopened']} before the first response, "
                  f"{fan['cancelled_after_events']} after events), over all repeats",
                  f"  delivery time          {fmt(fan['delivery_seconds'], 1)} s from the load's start "
                  f"until the last watch had everything ({fmt(fan['events_per_s'])} events/s); "
                  f"the load alone {fmt(fan['load_seconds'], 1)} s until the replica held it; "
                  f"opening the watches {fmt(fan['open_seconds'], 1)} s",
                  f"  server RSS, MB         before {fmt(fan['rss_before_mb'], 1)}, peak "
                  f"{fmt(fan['rss_peak_mb'], 1)}, end {fmt(fan['rss_end_mb'], 1)}",
                  f"  master connections     held by the server: {fan['master_held_before']} before, "
                  f"at most {fan['master_held_max']} during (of which Binlog Dump: "
                  f"{fan['binlog_dump_held_max']}); user kvgrpc in all: at most "
                  f"{fan['master_total_max']} (Binlog Dump {fan['binlog_dump_total_max']})"]
    watched = summary.get("watcher_seconds")
    if watched:
        lines += ["", "watched ingests: seconds until the watchers had every record (the ingest "
                  "itself is timed until the replica holds all)"]
        for name, value in watched.items():
            lines.append(f"  {name:<44} {fmt(value, 2):>22} s")
    memory = summary["memory"]
    if memory:
        lines += ["", f"memory: stream of {memory['records']:,} records, RSS sampled every 0.2 s "
                  f"({memory['samples']} samples); MB; start = at 10% of the run",
                  f"{'process':<10} {'start':>16} {'peak':>16} {'end':>16} {'growth':>7}  "
                  f"target: flat (growth <= {FLAT_TOLERANCE_MB:g}) and peak < {RSS_LIMIT_MB:g}"]
        for p in ("client", "server"):
            m = memory[p]
            lines.append(f"{p:<10} {fmt(m['start'], 1):>16} {fmt(m['peak'], 1):>16} "
                         f"{fmt(m['end'], 1):>16} {m['growth_mb']:>7.1f}  {met_text(m['met'])}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Chart
# --------------------------------------------------------------------------------------


def chart(summary: dict, runs: dict, path: Path) -> Path:
    """Three panels: ratios (and BatchGet keys/s) against targets; CPU µs per item by
    process; the memory run's RSS over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 14), layout="constrained",
                             gridspec_kw={"height_ratios": [1, 1.4, 0.9]})
    _plot_targets(axes[0], summary["checks"])
    _plot_cpu(axes[1], summary["benchmarks"])
    if "memory stream" in runs:
        _plot_rss(axes[2], runs["memory stream"][0]["extra"]["rss_samples"])
    env = summary["environment"]
    fig.suptitle(f"kvgrpc benchmark, size {env['size']['name']} ({env['repeat']} repeat(s), "
                 f"{env['cpus']} CPUs)", fontsize=13)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_targets(ax, checks: list[dict]) -> None:
    """Each check as value / target: 1.0 is the target; error bars span min-max."""
    rows = [c for c in checks if c["kind"] != "memory"]
    labels, values, lows, highs, colours, notes = [], [], [], [], [], []
    ends = []  # where each bar's error bar ends: its note goes after it
    for c in rows:
        v, t = c["value"], c["target"]
        labels.append(c["name"])
        values.append(v["median"] / t)
        lows.append((v["median"] - v["min"]) / t)
        highs.append((v["max"] - v["median"]) / t)
        ends.append(v["max"] / t)
        colours.append("tab:green" if c["met"] else "tab:red")
        notes.append(f"{v['median']:.2f} (target {t:g})" if c["kind"] == "ratio"
                     else f"{v['median']:,.0f} keys/s (target {t:,})")
    y = range(len(rows))
    ax.barh(y, values, xerr=[lows, highs], color=colours, capsize=3)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    for i, note in enumerate(notes):
        ax.text(ends[i] + 0.02, i, note, va="center", fontsize=8)
    ax.set_yticks(list(y), labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(ends + [1.0]) * 1.45)
    ax.set_xlabel("measured / target  (dashed line = target; green met, red not met)")
    ax.set_title("Ratios against their targets")


def _plot_cpu(ax, benchmarks: dict) -> None:
    names = list(benchmarks)
    height = 0.16
    colours = {"client": "tab:blue", "server": "tab:orange", "master": "tab:purple",
               "replica": "tab:gray", "watcher": "tab:green"}
    for j, process in enumerate(PROCESSES):
        values = [benchmarks[n]["cpu_us_per_item"].get(process, {}).get("median", 0) for n in names]
        ax.barh([i + (j - (len(PROCESSES) - 1) / 2) * height for i in range(len(names))],
                [v if v > 0 else float("nan") for v in values],  # 0: below /proc's resolution
                height=height, label=process, color=colours[process])
    ax.set_yticks(range(len(names)),
                  [f"{n} (per {benchmarks[n]['unit'][:-1]})" for n in names], fontsize=9)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("CPU µs per item (log scale)")
    ax.set_title("CPU per item by process")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)


def _plot_rss(ax, samples: dict) -> None:
    for process, points in samples.items():
        ax.plot([t for t, _ in points], [mb for _, mb in points], label=process, marker=".")
    ax.axhline(RSS_LIMIT_MB, color="tab:red", linestyle="--", linewidth=1, label="150 MB target")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since the client started")
    ax.set_ylabel("RSS, MB")
    ax.set_title("Memory during the large stream (first repeat)")
    ax.legend(fontsize=8)
