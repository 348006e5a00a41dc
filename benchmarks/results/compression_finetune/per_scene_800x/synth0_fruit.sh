set -e
B=.venv/bin
for spec in synth0:11141B fruit:39642B; do
  s=${spec%%:*}; budget=${spec##*:}
  W=outputs/perscene_user/$s
  mkdir -p $W
  $B/difix-ns compress --load-config outputs/compression_qat/runs/$s/difix-splatfacto/run/config.yml --budget $budget --finetune-steps 600 --out $W/800.dxs --pairs-out $W/pairs
  $B/difix-ns train-fixer --manifests $W/pairs/manifest.jsonl --out $W/restorer --backend nafnet --nafnet-width 8 --steps 3000 --batch-size 8 --crop-size 48 --perceptual off --val-every 750
  $B/difix-ns decompress $W/800.dxs --out $W/dec --restorer $W/restorer/fixer --restorer-strength 1
  $B/ns-eval --load-config $W/dec/config.yml --output-path $W/eval.json
done
