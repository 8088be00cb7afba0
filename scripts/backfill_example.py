"""An example backfill: the pattern to copy when you need to fix up stored tokens in bulk.

    .venv/bin/python scripts/backfill_example.py [--dry-run]

Rows stored by hand (`salesbot tokens set`, or a sqlite3 prompt) under the seed's key names may lack
the provider and subject columns that the OAuth flows fill in. This script fills them from the key
name, using service.keys.describe_key (SHOPIFY_ACCESS_TOKEN_acme -> provider "shopify", subject
"acme"), and links rows to their account through TokenStore.link_to_account when a UUID entry names
one. Only the public async TokenStore API is used, so it is safe to run while the service is serving.

What to keep when you write your own:
- Settings.from_environ() and TokenStore.open(settings): the same database and keys as the service.
- Read metadata with list_tokens() (values are never decrypted for a listing); decrypt only what the
  backfill needs (get_token / get_record).
- Write through the store (store_token, set_metadata, link_to_account): it takes SQLite's write
  lock, and every process's token cache learns of the change.
- Only touch what is missing (idempotent: a second run changes nothing), and print keys, never values.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.keys import describe_key  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.vault import TokenStore  # noqa: E402


async def backfill(store: TokenStore, *, dry_run: bool = False) -> int:
    """Set provider/subject (and the account link) on rows that lack them; returns rows changed."""
    changed = 0
    for record in await store.list_tokens():
        info = describe_key(record.key)
        if info is None or (record.provider and record.subject and record.account_uuid):
            continue
        if not (record.provider and record.subject):
            print(f"{'would set' if dry_run else 'set'} provider/subject on {record.key}")
            if not dry_run:
                await store.set_metadata(record.key, provider=info.provider, subject=info.subject)
            changed += 1
        if record.account_uuid is None and info.uuid_key is not None:
            account = await store.get_token(info.uuid_key)  # the UUID entry's value names the account
            if account and not dry_run and await store.link_to_account(record.key, account):
                print(f"linked {record.key} to its account")
    return changed


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--env-file", default=".env")
    args = parser.parse_args()
    async with TokenStore.open(Settings.from_environ(env_file=args.env_file)) as store:
        changed = await backfill(store, dry_run=args.dry_run)
    print(f"{changed} row(s) {'would change' if args.dry_run else 'changed'}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
