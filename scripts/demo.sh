#!/usr/bin/env bash
# Sets up .venv, writes the sample dataset (with defects) and runs the job on it with the
# DirectRunner; the job prints its summary, then this shows what was written.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
rm -rf demo/data  # the demo's own folder: written afresh each time
.venv/bin/beam-etl sample-data --output demo/data --num_images 200 --seed 0 --defects
.venv/bin/beam-etl preprocess --oxford_pets demo/data --output demo/out \
  --image_size 128 --augment_copies 1 --mask_values 1,2,3 --overwrite
echo
echo "demo/out:"; ls -l demo/out
echo; .venv/bin/beam-etl verify demo/out   # every file against the manifest's size and crc32c
echo; echo "demo/out/rejected/rejected-00000-of-00001.jsonl:"; cat demo/out/rejected/rejected-00000-of-00001.jsonl
echo; echo "statistics in demo/out/manifest.json:"
.venv/bin/python -c "
import json
stats = json.load(open('demo/out/manifest.json'))['statistics']
names = stats.pop('class_names')
print(json.dumps(stats, indent=1))
print(len(names), 'class names, e.g.', names[:5])"
echo; echo "the loader, on the training split:"
.venv/bin/beam-etl load --data demo/out --split train --batch_size 32 --steps 20
.venv/bin/beam-etl load --data demo/out --split train --preview demo/preview.png
