#!/usr/bin/env bash
# The article sweep (config/sweep-article.toml: cnn with and without a frame stack, cnnrnn, gru;
# 3 seeds x 3 folds at the default budget, 36 trials; issue 11's Measure) run across sessions.
#
# It takes longer than a session on 2 cores (6-79 min a trial, two at a time), and a session's
# machine need not keep files outside the repository (/tmp survived one session and not
# another). So each session's finished trials are kept in benchmarks/results/article-sweep/trials/
# (their result.json, history.csv, test_equity.csv: what results.csv and the report read; no
# weights). `run` seeds a fresh sweep directory with
# them (a unit whose trial directory holds a finished result.json is not trained again) and runs
# the rest; `save` copies the finished trials back; `report` writes results.csv and report.md
# over what is finished so far (a partial report says so: it counts the trials run) and copies
# them, with the figures, beside the kept trials.
#
#   bash benchmarks/article_sweep.sh run DIR      # Ctrl-C (SIGINT) stops it; run again resumes
#   bash benchmarks/article_sweep.sh save DIR     # then commit benchmarks/results/article-sweep
#   bash benchmarks/article_sweep.sh report DIR
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: benchmarks/article_sweep.sh run|save|report DIR"
what=${1:?$usage}
dir=${2:?$usage}
kept=benchmarks/results/article-sweep/trials
chartrl=${CHARTRL:-.venv/bin/chartrl}
out=$dir/sweep
case $what in
run)
    data=$dir/data
    if [ ! -d "$data/candles" ]; then
        "$chartrl" import ../shared/data/Binance_BTCUSDT_1h.csv --exchange binance \
            --symbol BTC/USDT --timeframe 1h --data-dir "$data"
    fi
    if [ -f "$out/sweep.json" ]; then
        exec "$chartrl" sweep --resume --out "$out"
    fi
    mkdir -p "$out/trials"
    if [ -d "$kept" ]; then cp -r "$kept/." "$out/trials/"; fi
    exec "$chartrl" sweep --spec config/sweep-article.toml --data-dir "$data" --out "$out"
    ;;
save)
    # Kept trials are only valid for the plan they ran under: the first save keeps the plan, and
    # a sweep of another plan (folds, budget, chart, strategies) is refused (the report's
    # reference is not the trials' business).
    mkdir -p "$kept"
    .venv/bin/python -c "import json, sys
new, kept = (json.load(open(p)) for p in sys.argv[1:])
same = lambda d: {k: v for k, v in d.items() if k not in ('meta', 'reference')}
sys.exit(None if same(new) == same(kept) else f'{sys.argv[1]} is another plan than {sys.argv[2]}: not saved')
" "$out/sweep.json" "$(if [ -f "$kept/../sweep.json" ]; then echo "$kept/../sweep.json"; else echo "$out/sweep.json"; fi)"
    cp "$out/sweep.json" "$kept/../sweep.json"
    n=0
    for result in "$out"/trials/*/result.json; do
        [ -f "$result" ] || continue
        grep -q '"status": "done"' "$result" || continue
        trial=$(dirname "$result")
        mkdir -p "$kept/$(basename "$trial")"
        for f in result.json history.csv test_equity.csv unit.json attempts.json; do
            if [ -f "$trial/$f" ]; then cp "$trial/$f" "$kept/$(basename "$trial")/"; fi
        done
        n=$((n + 1))
    done
    echo "$n finished trials kept in $kept"
    ;;
report)
    # The spec's reference (the plain CNN), whatever the plan of an older run of it said.
    .venv/bin/python -c "import sys, tomllib; from pathlib import Path
from chartrl.experiments.results import write_results
from chartrl.experiments.report import write_report
out, spec = Path(sys.argv[1]), tomllib.loads(Path(sys.argv[2]).read_text())
write_results(out); print(write_report(out, reference=spec.get('reference', 'cnn')))
" "$out" config/sweep-article.toml
    cp "$out/report.md" "$out/results.csv" "$out"/*.png "$(dirname "$kept")"
    echo "report, results.csv and figures copied to $(dirname "$kept")"
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
