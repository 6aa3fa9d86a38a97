#!/bin/sh
# Validation sweep of the contrastive weights of the sequence and graph methods (issue 17):
# MovieLens-100k leave-one-out, --phase valid (trained on train, scored on each user's
# second-to-last interaction; the test interactions are never seen), MINUTES of one thread on
# CPU core CPU per run, one JSON per setting in benchmarks/results/tuning/recsys_sweep/.
# The presets are chosen from these files alone (docs/benchmarks.md, "Recommendation").
#
#   MINUTES=3 CPU=0 sh benchmarks/recsys_sweep.sh [weights|views|cosine|zero]
set -e
cd "$(dirname "$0")/.."
OUT=benchmarks/results/tuning/recsys_sweep
M=${MINUTES:-3}
mkdir -p "$OUT"
run() {
    tag=$1; shift
    [ -f "$OUT/$tag.json" ] && return 0    # done in an earlier invocation
    taskset -c "${CPU:-0}" python benchmarks/recsys.py --protocol loo --phase valid --minutes "$M" --threads 1 \
        --tag "$tag" --out "$OUT/$tag.json" "$@"
}
case "${1:-weights}" in
weights)
    run base --baselines popularity,als --methods sasrec,lightgcn
    for w in 0.1 0.01; do
        run "w$w" --baselines "" --methods cl4srec,duorec --set "cl4srec:ssl_weight=$w" --set "duorec:ssl_weight=$w"
    done
    for w in 0.1 0.02 0.005; do
        run "sgl_w$w" --baselines "" --methods sgl --set "sgl:ssl_weight=$w"
    done
    for w in 0.5 0.05 0.005; do
        run "simgcl_w$w" --baselines "" --methods simgcl --set "simgcl:ssl_weight=$w"
    done
    ;;
views)   # after SGL's views became per-epoch (as the paper's code): its weight and temperature again
    for wt in 0.02:0.2 0.05:0.2 0.1:0.2 0.05:0.5; do
        w=${wt%:*}; t=${wt#*:}
        run "sgl_epochviews_w${w}_t$t" --baselines "" --methods sgl --set "sgl:ssl_weight=$w" --set "sgl:ssl_temperature=$t"
    done
    run simgcl_w0.001 --baselines "" --methods simgcl --set "simgcl:ssl_weight=0.001"
    ;;
cosine)  # CL4SRec / DuoRec with NT-Xent on cosines (ssl_cosine) instead of the papers' dot products
    for wt in 0.1:0.2 0.02:0.2; do
        w=${wt%:*}; t=${wt#*:}
        run "cos_w${w}_t$t" --baselines "" --methods cl4srec,duorec \
            --set "cl4srec:ssl_weight=$w" --set "cl4srec:ssl_temperature=$t" --set cl4srec:ssl_cosine=true \
            --set "duorec:ssl_weight=$w" --set "duorec:ssl_temperature=$t" --set duorec:ssl_cosine=true
    done
    ;;
zero)    # equal epochs, no contrastive term: do CL4SRec / DuoRec match SASRec when ssl_weight = 0?
    [ -f "$OUT/w0_e15.json" ] || taskset -c "${CPU:-0}" python benchmarks/recsys.py --protocol loo --phase valid \
        --epochs 15 --threads 1 --baselines "" --methods sasrec,duorec,cl4srec --set duorec:ssl_weight=0 \
        --set cl4srec:ssl_weight=0 --tag w0_e15 --out "$OUT/w0_e15.json"
    ;;
*) echo "unknown stage $1" >&2; exit 2 ;;
esac
