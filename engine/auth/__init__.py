"""Authentication and access control: users, passwords, tokens, API keys, ACL.

Nothing here speaks HTTP: `server.auth` extracts credentials from requests and calls
`AuthService`; routes ask `Acl` what a principal may do with a task.
"""

from __future__ import annotations
