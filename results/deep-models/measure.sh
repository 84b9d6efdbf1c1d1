#!/bin/bash
# Issue 12 measurement (final code), multi task: baselines tuned (tune + evaluate), deep models
# evaluated with their defaults (no tuning result); on synthetic the dnn also tuned + evaluated.
set -u
export PATH="$PWD/.venv/bin:$PATH"
LOG=measure.log
echo "start $(date -u) $(git rev-parse HEAD)" >> $LOG
rm -f artifacts/tuning/*/multi/{dnn,lstm,gru,attention_lstm,attention_gru}.json
for d in synthetic pbmc68k zeisel cbmc; do
  for arch in mean ridge knn; do
    genebench run --dataset $d --arch $arch --tasks multi 2>&1 | grep "^evaluate\|rror" >> $LOG
  done
  for arch in dnn lstm gru attention_lstm attention_gru; do
    s=$(date +%s)
    genebench evaluate --dataset $d --task multi --arch $arch 2>&1 | grep "^evaluate\|rror" >> $LOG
    echo "  $d $arch $(( $(date +%s) - s )) s" >> $LOG
  done
  :
done
s=$(date +%s)
genebench run --dataset synthetic --arch dnn --tasks multi 2>&1 | grep "^evaluate\|rror" | sed 's/^/TUNED /' >> $LOG
echo "  synthetic dnn tuned $(( $(date +%s) - s )) s" >> $LOG
echo "end $(date -u)" >> $LOG
