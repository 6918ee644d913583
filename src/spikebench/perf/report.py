"""Plain-text tables of a ``spikebench perf`` record (the CLI prints them; nothing here prints)."""

from __future__ import annotations

from typing import Any

MIB = 2**20


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:.1f}"


def _busy(timing: dict[str, Any]) -> str:
    """Mark a timing whose wall time far exceeds its CPU time (the process waited for a core)."""
    wall, cpu = timing.get("median_s"), timing.get("cpu_median_s")
    return "*" if wall and cpu is not None and cpu < 0.6 * wall else ""


def _snntorch_rows(net: dict[str, Any]) -> list[list[str]]:
    """Rows of the side-by-side table for the snnTorch network and the bptt / snnTorch ratio (both
    precisions timed), from the network comparison ``net``; none where one is missing."""
    by = net.get("precisions", {})
    if not {"fp32", "bf16"} <= set(by) or not all("snntorch" in by[p] for p in ("fp32", "bf16")):
        return []
    fp32, bf16 = by["fp32"]["snntorch"], by["bf16"]["snntorch"]
    T = str(net["T"])
    return [
        [
            "snnTorch network",
            "ff",
            T,
            f"{fp32['samples_per_second']:.0f}",
            f"{bf16['samples_per_second']:.0f}",
            f"{fp32['median_s'] / bf16['median_s']:.2f}x",
        ],
        ["bptt / snnTorch", "ff", T, f"{by['fp32']['speedup']:.2f}x", f"{by['bf16']['speedup']:.2f}x", ""],
    ]


def format_report(rec: dict[str, Any]) -> str:
    """The perf record ``rec`` (from :func:`spikebench.perf.run_perf`) as text tables."""
    env = rec["environment"]
    lines = [
        f"spikebench perf on {env['device']} ({env.get('cpu') or 'unknown cpu'}, {env['cpu_count']} cores, "
        f"{env['torch_threads']} torch threads), torch {env['torch_version']}",
    ]
    if env.get("heap"):
        lines.append(f"C heap: {env['heap']}")
    if env.get("lif_forward"):
        lines.append(f"LIF forward recursion: {env['lif_forward']}")
    load = env.get("load_average")
    if load:
        end = env.get("load_average_end") or load
        lines.append(f"load average {load[0]:.1f} at start, {end[0]:.1f} at end (medians of repeats below)")
    g = rec["gemm"]
    lines += [
        "",
        f"GEMM {g['n']}^3 float32: {g['flops_per_second'] / 1e9:.1f} GFLOP/s (median of {g['repeats']})",
    ]

    net = rec["network_vs_snntorch"]
    lines += ["", f"Default network 784-256-256-10, BPTT, T={net['T']}, batch {net['batch']}:"]
    rows = []
    by = net.get("precisions") or {"fp32": net}  # records before bf16 was timed here: fp32 only
    for precision, entry in by.items():
        for key, label in (
            ("spikebench", "spikebench bptt"),
            ("snntorch", f"snnTorch {net.get('snntorch_version')}"),
        ):
            if key in entry:
                t = entry[key]
                cells = [f"{t['samples_per_second']:.0f}", f"{t['median_s'] * 1e3:.1f}{_busy(t)}"]
                rows.append([f"{label} {precision}", *cells])
    lines += _table(["", "samples/s", "ms/batch"], rows)
    for precision, entry in by.items():
        if "speedup" in entry:
            lines.append(
                f"  {precision}: spikebench is {entry['speedup']:.2f}x the samples/s of snnTorch "
                f"({entry['speedup_cpu_time']:.2f}x by process CPU time)"
            )
    if "bf16_over_fp32" in net:
        line = f"  bptt in bf16 is {net['bf16_over_fp32']:.2f}x bptt in fp32"
        if "bf16_over_snntorch_fp32" in net:
            line += f" and {net['bf16_over_snntorch_fp32']:.2f}x the snnTorch network in fp32"
        lines.append(line)
    if net.get("note"):
        lines.append(f"  snnTorch skipped: {net['note']}")

    rules = rec["rules"]
    all_T = sorted({r["T"] for r in rules["rows"]})
    timed_T = sorted({r["T"] for r in rules["rows"] if "median_s" in r})
    lines += [
        "",
        f"Rules on the default network, batch {rules['batch']}: samples/s (median) and peak training memory "
        "in MiB (exact tensor storage; CUDA: allocator peak)",
    ]
    header = ["rule", "net"] + [f"sps T={T}" for T in timed_T] + [f"MiB T={T}" for T in all_T] + ["growth"]
    growth = {(g["rule"], g["recurrent"]): g for g in rules["growth"]}
    rows = []
    seen = []
    for r in rules["rows"]:
        key = (r["rule"], r["recurrent"])
        if key not in seen:
            seen.append(key)
    for key in seen:
        mine = {r["T"]: r for r in rules["rows"] if (r["rule"], r["recurrent"]) == key}
        row = [key[0], "rec" if key[1] else "ff"]
        row += [
            f"{mine[T]['samples_per_second']:.0f}{_busy(mine[T])}"
            if T in mine and "median_s" in mine[T]
            else "-"
            for T in timed_T
        ]
        row += [_mib(mine[T]["peak_bytes"]) if T in mine else "-" for T in all_T]
        gr = growth.get(key)
        row.append(f"{gr['ratio']:.2f}x ({gr['T_low']}->{gr['T_high']})" if gr else "-")
        rows.append(row)
    lines += _table(header, rows)
    bf16 = [r for r in rules["rows"] if "samples_per_second_bf16" in r]
    if bf16:
        lines += ["", "fp32 and bf16 side by side (timed alternately in the same rounds): samples/s"]
        rows = [
            [
                r["rule"],
                "rec" if r["recurrent"] else "ff",
                str(r["T"]),
                f"{r['samples_per_second']:.0f}",
                f"{r['samples_per_second_bf16']:.0f}",
                f"{r['bf16_speedup']:.2f}x",
            ]
            for r in bf16
        ]
        lines += _table(["rule", "net", "T", "fp32", "bf16", "bf16 / fp32"], rows + _snntorch_rows(net))
        if _snntorch_rows(net):
            lines.append(
                "  the snnTorch network and the bptt / snnTorch ratio: bptt and snnTorch timed together "
                "(the network comparison above)"
            )
    for note in rules.get("notes", []):
        lines.append(f"  {note}")
    for s in rules["skipped"]:
        lines.append(f"  skipped {s['rule']} ({'rec' if s['recurrent'] else 'ff'}): {s['note']}")

    attacks = rec.get("attacks")
    if attacks and attacks["rows"]:
        precisions = attacks["precisions"]
        lines += [
            "",
            f"Attacks on the default network (untrained, T={attacks['T']}), {attacks['samples']} samples, L-inf "
            f"eps {attacks['eps']:g}, {attacks['queries']} queries / {attacks['steps']} steps: model calls "
            "per second (query attacks: forward passes of one sample; gradient attacks: forward + backward)",
        ]
        rows = []
        for r in attacks["rows"]:
            row = [r["attack"], r["kind"]]
            row += [f"{r[p]['calls_per_second']:.0f}{_busy(r[p])}" for p in precisions]
            row += [str(r[precisions[0]]["calls"])]
            if "bf16_speedup" in r:
                row.append(f"{r['bf16_speedup']:.2f}x")
            rows.append(row)
        header = ["attack", "kind", *(f"calls/s {p}" for p in precisions), f"calls ({precisions[0]})"]
        lines += _table(header + (["bf16 / fp32"] if "bf16_speedup" in attacks["rows"][0] else []), rows)
        for note in attacks.get("notes", []):
            lines.append(f"  {note}")

    eff = rec["efficiency"]
    if eff["rows"]:
        lines += ["", "BPTT training against the GEMM rate (dense products only; see training_flops):"]
        lines += _table(
            ["T", "GFLOP/batch", "GFLOP/s", "of GEMM"],
            [
                [
                    str(e["T"]),
                    f"{e['flops_per_batch'] / 1e9:.2f}",
                    f"{e['flops_per_second'] / 1e9:.1f}",
                    f"{100 * e['fraction_of_gemm']:.0f}%",
                ]
                for e in eff["rows"]
            ],
        )

    proto = rec["protocol"]
    libs = proto["libraries"]
    lines += [
        "",
        f"Open Neuromorphic protocol: Linear + LIF, batch {proto['batch']}, T={proto['T']}, "
        "forward + backward, median seconds (ratio to spikebench) [peak MiB]",
    ]
    rows = []
    for entry in proto["sizes"]:
        if "skipped" in entry:
            rows.append([str(entry["n"]), f"skipped: {entry['skipped']}"] + [""] * (len(libs) - 1))
            continue
        by = {r["library"]: r for r in entry["results"]}
        row = [str(entry["n"])]
        for lib in libs:
            r = by.get(lib)
            if r is None:
                row.append("-")
                continue
            cell = f"{r['median_s']:.3f}{_busy(r)}"
            if lib != "spikebench":
                cell += f" ({r['ratio_to_spikebench']:.2f}x)"
            if r.get("peak_bytes") is not None:
                cell += f" [{r['peak_bytes'] / MIB:.0f}]"
            row.append(cell)
        rows.append(row)
    lines += _table(["n"] + libs, rows)
    for entry in proto["sizes"]:
        if "linear_only" in entry:
            neuron = ", ".join(f"{r['library']} {r['neuron_s']:.3f} s" for r in entry["results"])
            lines.append(
                f"  n={entry['n']}: the Linear alone takes {entry['linear_only']['median_s']:.3f} s; "
                f"above it (the neuron): {neuron}"
            )
    for p in proto["peers"]:
        if p["note"]:
            lines.append(f"  {p['name']} skipped: {p['note']}")
    lines += ["", "* wall time above 1.7x the CPU time: the process waited for a core (busy machine)."]
    return "\n".join(lines)
