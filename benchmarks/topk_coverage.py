"""How many distinct items a run recommends, and how popular they are, against its OOD test.

A model that has collapsed towards a popularity ranking recommends few distinct items, all of
them popular; on a popularity-shifted OOD test (Yelp2018: held-out items drawn with probability
proportional to 1 / popularity) it then scores near zero. For each run directory, the best
checkpoint ranks every item for every user (the user's training and val items masked, as the
evaluation masks them for the OOD test) and this prints: distinct items over all top-K lists,
the median training popularity of those items and of the OOD-test items, and the share of
distinct OOD-test items that appear in some top-K list.

Usage::

    OODREC_DATA=../shared/data python benchmarks/topk_coverage.py \
        runs/causal_methods/yelp2018-causaldiff-seed1 runs/shift_methods/yelp2018-rns-seed1
"""

from __future__ import annotations

import argparse

import torch

from oodrec.eval.evaluate import Evaluator
from oodrec.eval.ranking import mask_history
from oodrec.train.reload import load_run


@torch.no_grad()
def coverage(run_dir: str, k: int, batch: int) -> dict[str, float]:
    run = load_run(run_dir)
    ds = run.dataset
    ood = ds.splits["ood_test"]
    pop = ds.item_degree()
    masks = Evaluator(ds, run.cfg.eval, torch.device("cpu")).masks["ood_test"]
    score = run.method.scorer()
    hit = torch.zeros(ds.num_items, dtype=torch.bool)
    for start in range(0, ds.num_users, batch):
        users = torch.arange(start, min(start + batch, ds.num_users))
        scores = score(users).float()
        mask_history(scores, users, masks)  # the evaluation's masks for the OOD test
        hit[scores.topk(k, dim=1).indices.reshape(-1)] = True
    ood_items = ood.items.unique()
    return {
        "distinct": int(hit.sum()),
        "items": ds.num_items,
        "median_pop_recommended": float(pop[hit].float().median()),
        "median_pop_ood": float(pop[ood.items].float().median()),
        "ood_items_recommended": float(hit[ood_items].float().mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (finished runs)")
    p.add_argument("--k", type=int, default=20, help="list length (default 20)")
    p.add_argument("--batch", type=int, default=1024, help="users per scoring batch")
    args = p.parse_args()
    print(
        f"{'run':48} {'distinct@' + str(args.k):>12} {'med pop rec':>11} "
        f"{'med pop OOD':>11} {'OOD items rec':>13}"
    )
    for run_dir in args.runs:
        c = coverage(run_dir, args.k, args.batch)
        print(
            f"{run_dir:48} {c['distinct']:>6} /{c['items']:>5} "
            f"{c['median_pop_recommended']:>11.0f} {c['median_pop_ood']:>11.0f} "
            f"{c['ood_items_recommended']:>13.1%}"
        )


if __name__ == "__main__":
    main()
