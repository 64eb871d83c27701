#!/usr/bin/env bash
# D3.2 Table 5 (normalized activations vs the uniform and clipped-normal models, VM variance reduction) and
# Figure 9: activation statistics of EXACT INT2 D/R=8 training on ogbn-arxiv and Flickr (activation_stats=true is
# the default). These runs are also part of table4.sh; whichever script runs second skips them.
# Settings and switches (LAUNCHER=slurm, --dry-run, ...): gnn_common.sh and common.sh.
#
#   bash scripts/reproduce/table5.sh
#   LAUNCHER=slurm bash scripts/reproduce/table5.sh --dry-run
source "$(dirname "$0")/gnn_common.sh"

if wants arxiv; then
    sweep arxiv-exact "${ARXIV[@]}" quant=exact vm=false,true
fi
if wants flickr; then
    sweep flickr-exact "${FLICKR[@]}" quant=exact
fi
finish
