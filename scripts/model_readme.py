#!/usr/bin/env python3
"""Writes models/<name>/README.md from the model's spec.json and the provenance in model.json.

Usage: python3 scripts/model_readme.py models/mnist-mlp-sparse [more model dirs...]
"""
import json
import sys
from pathlib import Path

for d in map(Path, sys.argv[1:]):
    m = json.loads((d / "model.json").read_text())
    p = m["provenance"]
    spec = json.loads((d / "spec.json").read_text())
    exits = "".join(
        f"- exit `{k}` alone (every sample answered there): {v * 100:.2f}%\n"
        for k, v in p.get("exit_accuracy", {}).items()
    )
    text = f"""# {m['name']}

{m.get('description', '')}

Trained by `edgecut train` from [`spec.json`](spec.json) on the 8,000 training digits of
`models/data/mnist` and evaluated on its 2,000 test digits (seed {p['seed']}, {p['epochs']} epochs,
{p['steps']} optimizer steps, {spec['optimizer']['type']} with lr {spec['lr']}, batch {spec['batch_size']},
backend `{p['backend']}`). The exact command:

```
{p['command']}
```

Results (also in `model.json` under `provenance`; `edgecut eval {d.as_posix()}` prints the same):

- test accuracy: {p['test_accuracy'] * 100:.2f}% (final classifier, {p['test_samples']} test digits)
{exits}- final mean training loss: {p['final_loss']:.4f}

Training is deterministic for a given seed on the CPU backend: rerunning the command rebuilds
the same weights.
"""
    (d / "README.md").write_text(text)
    print(f"wrote {d / 'README.md'}")
