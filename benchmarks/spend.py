"""API requests and estimated spend per brand per day, per source, for the default configuration,
next to each API's rate limits.  Pure arithmetic from the config defaults and the collectors' own
constants (no network); the price assumptions are printed and can be overridden.

    python benchmarks/spend.py [--brands 10] [--x-price-per-request 0.005]

Assumptions (state them next to any figure you quote):
* X API v2 is pay-per-use: --x-price-per-request (default USD 0.005 per request; check your plan),
  recent search reads at most one page when quiet (every ``quiet_posts_every`` = 600 s) and up to
  ``max_pages`` = 3 per poll when busy; recent counts every ``counts_every`` = 300 s; the collector's
  own daily budget ``max_requests_per_day`` = 500 caps it.  App limits: 450 search / 15 min,
  300 counts / 15 min.
* Reddit OAuth: free for this volume; ~100 queries/minute per client id; one search per poll (plus one
  comments listing per poll when ``comment_subreddits`` is set).
* RSS, Google News, Hacker News (Algolia), Bluesky public API, Mastodon: free; one request per feed /
  per OR-group per poll.
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from surgewatch.config import GoogleNewsSource, HackerNewsSource, RedditSource, SourceBase, XSource  # noqa: E402

DAY = 86400


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brands", type=int, default=10)
    ap.add_argument("--x-price-per-request", type=float, default=0.005)
    ap.add_argument("--busy-fraction", type=float, default=0.05, help="share of X polls during a surge (3 pages)")
    args = ap.parse_args()
    x = XSource()
    rss_interval = SourceBase.model_fields["interval"].default
    rows = []

    # X: counts every 300 s, posts every 600 s when quiet, every poll (3 pages) when busy, capped.
    polls = DAY / x.interval
    counts = DAY / 300
    quiet_posts = DAY / 600 * (1 - args.busy_fraction)
    busy_posts = polls * args.busy_fraction * x.max_pages
    x_uncapped = counts + quiet_posts + busy_posts
    x_day = min(x_uncapped, x.max_requests_per_day)
    rows.append({"source": "x", "interval_s": x.interval, "requests_per_hour": round(x_day / 24, 1),
                 "requests_per_day": round(x_day), "uncapped_per_day": round(x_uncapped),
                 "usd_per_day": round(x_day * args.x_price_per_request, 2),
                 "limit": "450 search + 300 counts / 15 min per app",
                 "brands_within_limit": int(min(450 * 96 / max(1, x_day - counts), 300 * 96 / counts))})
    reddit = RedditSource()
    r_day = DAY / reddit.interval
    rows.append({"source": "reddit", "interval_s": reddit.interval, "requests_per_hour": round(r_day / 24, 1),
                 "requests_per_day": round(r_day), "usd_per_day": 0.0, "limit": "~100 queries/min per client",
                 "brands_within_limit": int(100 / (r_day / 1440))})
    for name, cfg_cls in (("rss (1 feed)", None), ("google_news", GoogleNewsSource), ("hackernews", HackerNewsSource)):
        interval = cfg_cls().interval if cfg_cls else rss_interval
        per_day = DAY / interval
        rows.append({"source": name, "interval_s": interval, "requests_per_hour": round(per_day / 24, 1),
                     "requests_per_day": round(per_day), "usd_per_day": 0.0,
                     "limit": "none published (be polite: conditional GET)", "brands_within_limit": None})

    print(f"default intervals; X at USD {args.x_price_per_request}/request, {args.busy_fraction:.0%} of polls busy")
    print(f"{'source':14} {'interval':>8} {'req/h':>7} {'req/day':>8} {'USD/day':>8}  limit (brands that fit)")
    for r in rows:
        fit = "" if r["brands_within_limit"] is None else f" ({r['brands_within_limit']} brands)"
        print(f"{r['source']:14} {r['interval_s']:>7}s {r['requests_per_hour']:>7} {r['requests_per_day']:>8} "
              f"{r['usd_per_day']:>8}  {r['limit']}{fit}")
    total = sum(r["usd_per_day"] for r in rows)
    print(f"per brand: USD {total:.2f}/day, USD {total * 30:.0f}/month; for {args.brands} brands: "
          f"USD {total * args.brands:.2f}/day")
    print(json.dumps({"per_brand_per_day": rows, "usd_per_brand_per_day": round(total, 2),
                      "x_price_per_request": args.x_price_per_request, "brands": args.brands,
                      "usd_per_day_all_brands": round(total * args.brands, 2)}))


if __name__ == "__main__":
    main()
