#!/usr/bin/env python3
"""Turns the JSON of benches/run_all.sh into the tables of docs/PERFORMANCE.md
(ByteEdit vs diffusers, time ratios and peak memory) and, when matplotlib is
installed, a bar chart of the time ratios.

    python3 models/benches/report.py target/bench-results [--plot docs/bench-ratios.png] [--json all.json]
"""
import argparse
import json
from pathlib import Path


def load(path):
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    return {(r["case"], r["size"]): r for r in doc["results"]}


def table(rust, ref, title):
    print(f"\n#### {title}\n")
    print("| case | size | ByteEdit (flex) s | diffusers s | ByteEdit / diffusers | ByteEdit peak MiB | diffusers peak MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for key, r in rust.items():
        d = ref.get(key)
        ratio = r["min_s"] / d["min_s"] if d else None
        rows.append((key, ratio))
        print(
            f"| {key[0]} | {key[1] or '-'} | {r['min_s']:.3f} | "
            f"{d['min_s']:.3f} | {ratio:.2f}x | " if d else f"| {key[0]} | {key[1] or '-'} | {r['min_s']:.3f} | - | - | ",
            end="",
        )
        print(f"{r['peak_rss_mib']:.0f} | {d['peak_rss_mib']:.0f} |" if d else f"{r['peak_rss_mib']:.0f} | - |")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path, help="both sides' figures and the ratios, one row per case")
    args = ap.parse_args()
    ratios = {}
    memory = {}
    for model in ("tiny", "sd15"):
        rust = load(args.results / f"{model}-flex.json")
        ref = load(args.results / f"{model}-diffusers.json")
        if rust:
            ratios[model] = table(rust, ref, f"{model}: ByteEdit (burn flex) vs diffusers (torch), min time")
            memory[model] = [(k, r["peak_rss_mib"], ref[k]["peak_rss_mib"]) for k, r in rust.items() if k in ref]
            combined = [
                {"case": c, "size": s, "ours_s": r["min_s"], "theirs_s": ref[(c, s)]["min_s"] if (c, s) in ref else None,
                 "ratio": (r["min_s"] / ref[(c, s)]["min_s"]) if (c, s) in ref else None,
                 "ours_peak_mib": r["peak_rss_mib"],
                 "theirs_peak_mib": ref[(c, s)]["peak_rss_mib"] if (c, s) in ref else None}
                for (c, s), r in rust.items()
            ]
            if args.json:
                doc = json.loads(args.json.read_text()) if args.json.is_file() else {}
                doc[model] = combined
                args.json.write_text(json.dumps(doc, indent=2) + "\n")
    for model in ("tiny", "sd15"):
        flex = load(args.results / f"{model}-flex.json")
        nd = load(args.results / f"{model}-ndarray.json")
        if nd:
            print(f"\n#### {model}: CPU backends (min time)\n")
            print("| case | size | flex s | ndarray s | ndarray / flex |")
            print("| --- | --- | --- | --- | --- |")
            for key, r in nd.items():
                f = flex.get(key)
                if f:
                    print(f"| {key[0]} | {key[1]} | {f['min_s']:.3f} | {r['min_s']:.3f} | {r['min_s'] / f['min_s']:.1f}x |")
    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("\n(matplotlib not installed: no plot)")
            return
        fig, axes = plt.subplots(2, len(ratios), figsize=(6 * len(ratios), 8), squeeze=False)
        for col, (model, rows) in enumerate(ratios.items()):
            ax = axes[0][col]
            rows = [(f"{c} {s}" if s else c, r) for (c, s), r in rows if r is not None]
            ax.barh([n for n, _ in rows], [r for _, r in rows], color="#4c72b0")
            ax.axvline(1.0, color="black", linewidth=1)
            ax.set_title(f"{model}: ByteEdit time / diffusers time (lower is better)")
            ax.invert_yaxis()
            ax = axes[1][col]
            mem = memory.get(model, [])
            names = [f"{c} {s}" if s else c for (c, s), _, _ in mem]
            ys = range(len(mem))
            ax.barh([y - 0.2 for y in ys], [m for _, m, _ in mem], height=0.4, label="ByteEdit", color="#4c72b0")
            ax.barh([y + 0.2 for y in ys], [m for _, _, m in mem], height=0.4, label="diffusers", color="#dd8452")
            ax.set_yticks(list(ys), names)
            ax.set_xlabel("peak RSS, MiB")
            ax.set_title(f"{model}: peak memory (lower is better)")
            ax.legend()
            ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
