"""Tenancy (pure): which tenant a user belongs to, and which tenant owns a workspace.

Tenant = organization. A user belongs to the tenant named by its first `tenant:<name>`
group, else to the default tenant (so does every caller when auth is off). A cloud
deployment's workspace is named `cloud.<tenant>.<deployment id>` (the tenant with every
character outside `[A-Za-z0-9_-]` replaced by `_`); every other workspace (those of
`server-config.yaml`) belongs to the default tenant. The `/v1` routes and the access
control of `/api` (engine.auth.acl) both decide through this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_TENANT = "default"
TENANT_GROUP = "tenant:"
WORKSPACE_PREFIX = "cloud."
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tenant_of_groups(groups: Iterable[str]) -> str:
    """The tenant of a user with these groups."""
    for group in groups:
        if group.startswith(TENANT_GROUP) and len(group) > len(TENANT_GROUP):
            return group[len(TENANT_GROUP):]
    return DEFAULT_TENANT


def safe_tenant(tenant: str) -> str:
    """The tenant as it appears in workspace names and folders."""
    return _UNSAFE.sub("_", tenant)


def cloud_workspace(tenant: str, deployment_id: str) -> str:
    """The workspace name of a tenant's deployment."""
    return f"{WORKSPACE_PREFIX}{safe_tenant(tenant)}.{deployment_id}"


def workspace_tenant(workspace: str) -> str:
    """The (safe) tenant owning a workspace: the middle of a cloud workspace's name, else
    the default tenant."""
    if workspace.startswith(WORKSPACE_PREFIX):
        owner, dot, _ = workspace[len(WORKSPACE_PREFIX):].rpartition(".")
        if dot and owner:
            return owner
    return DEFAULT_TENANT


def may_see_workspace(groups: Iterable[str], workspace: str) -> bool:
    """Whether a (non-admin) user with these groups may see anything of `workspace`."""
    return workspace_tenant(workspace) == safe_tenant(tenant_of_groups(groups))
