set -e
B=.venv/bin
W=outputs/perscene_user
$B/difix-ns compress --load-config outputs/compression_qat/runs/beer/difix-splatfacto/run/config.yml --budget 2155B --finetune-steps 600 --out $W/beer800.dxs --pairs-out $W/pairs
$B/difix-ns train-fixer --manifests $W/pairs/manifest.jsonl --out $W/restorer --backend nafnet --nafnet-width 8 --steps 3000 --batch-size 8 --crop-size 48 --perceptual off --val-every 750
$B/difix-ns decompress $W/beer800.dxs --out $W/dec --restorer $W/restorer/fixer --restorer-strength 1
$B/ns-eval --load-config $W/dec/config.yml --output-path $W/eval.json
