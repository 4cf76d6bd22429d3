"""The identity graph: userId / anonymousId / email keys → one profile with merged traits.

- model.py: what one message says about identity (its keys, traits, an alias's previousId)
  and a profile as the graph holds it in memory
- graph.py: `IdentityGraph`, the changes of one ingest transaction under the guardrails
  (blocked values, per-kind limits, refused merges kept as conflicts)
- statements.py: the graph's SQL, built once per process
- profiles.py: profiles read and split for the admin API, the CLI and the console (`lookup`,
  `profile`, `unlink`)
"""

from __future__ import annotations

from gateway.identity.graph import IDENTIFIED, LIMIT, UNLINKED, IdentityGraph
from gateway.identity.model import Key, Links, Profile, links_of, user_traits
from gateway.identity.profiles import UnlinkError, lookup, profile, unlink

__all__ = ["IDENTIFIED", "LIMIT", "UNLINKED", "IdentityGraph", "Key", "Links", "Profile",
           "UnlinkError", "links_of", "lookup", "profile", "unlink", "user_traits"]
