"""Summarises one numeric column of a CSV file and saves the summary in /tmp."""

import csv
import math
import sys

SUMMARY_PATH = "/tmp/summary.txt"


def summarise(values):
    ordered = sorted(values)
    count = len(ordered)
    mean = math.fsum(ordered) / count
    middle = count // 2
    median = ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    # Sample standard deviation: the data are a sample of the weather.
    variance = math.fsum((v - mean) ** 2 for v in ordered) / (count - 1) if count > 1 else 0.0
    return [
        ("count", str(count)),
        ("mean", f"{mean:.2f}"),
        ("median", f"{median:.2f}"),
        ("stdev", f"{math.sqrt(variance):.2f}"),
        ("min", f"{ordered[0]:.2f}"),
        ("max", f"{ordered[-1]:.2f}"),
    ]


def main(argv):
    path = argv[1] if len(argv) > 1 else "assets/measurements.csv"
    column = argv[2] if len(argv) > 2 else "temperature_c"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or column not in rows[0]:
        print(f"python-stats: {path} has no column {column!r}", file=sys.stderr)
        return 2
    values = [float(row[column]) for row in rows]
    lines = [f"{column} in {path}"] + [f"{name}: {value}" for name, value in summarise(values)]
    with open(SUMMARY_PATH, "w") as out:
        out.write("\n".join(lines) + "\n")
    # Read back what was saved, so the output shows the scratch file works.
    with open(SUMMARY_PATH) as saved:
        print(saved.read(), end="")
    print(f"(summary saved to {SUMMARY_PATH})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
