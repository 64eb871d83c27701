#!/usr/bin/env bash
# D3.2 Table 4 (GNN activation compression: accuracy, epochs/s, activation memory) and Figure 10: ogbn-arxiv and
# Flickr with the paper's protocol, then the tables regenerated from the records. Settings: gnn_common.sh and
# common.sh.
#
#   bash scripts/reproduce/table4.sh                     # 10 seeds, 500 / 400 epochs, here
#   LAUNCHER=slurm bash scripts/reproduce/table4.sh hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1
#   LAUNCHER=slurm bash scripts/reproduce/table4.sh --dry-run    # list the jobs, submit nothing
#   DATASET=synthetic SEEDS=0,1 EPOCHS=10 DEVICE=cpu bash scripts/reproduce/table4.sh energy=none   # quick check
source "$(dirname "$0")/gnn_common.sh"

if wants arxiv; then
    sweep arxiv-fp32 "${ARXIV[@]}" quant=fp32
    # EXACT INT2 D/R=8 with and without variance minimisation (the "INT2+VM" row).
    sweep arxiv-exact "${ARXIV[@]}" quant=exact vm=false,true
    sweep arxiv-block "${ARXIV[@]}" quant=block G_R=2,4,8,16,32,64
    # Ours, not in the paper: dropout masks regenerated from their seed in backward (same training).
    sweep arxiv-lean "${ARXIV[@]}" quant=block G_R=64 lean=true
fi
if wants flickr; then
    sweep flickr-fp32 "${FLICKR[@]}" quant=fp32
    sweep flickr-exact "${FLICKR[@]}" quant=exact
    sweep flickr-block "${FLICKR[@]}" quant=block G_R=64
fi
finish
