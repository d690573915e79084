"""Access control: which tasks a user may see and run (pure; docs/auth.md).

Rules `{workspace, tasks, action, groups, users}`: `workspace` and each of `tasks` are
globs (`tasks` over `"folder/task"`, or `"task"` for a task without a folder). A rule
applies to a user named in `users` (email or id) or in one of `groups`; with neither, to
everyone. Of all the rules that match, the highest level wins (run > view > deny); no
match means deny. Admins bypass the rules; without an `acl` section everyone may run
everything. Tenancy comes first: a non-admin user sees nothing of another tenant's
workspaces (engine.cloudtenancy), whatever the rules say.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.auth.model import User
from engine.cloudtenancy import may_see_workspace


class Level(enum.IntEnum):
    """What a user may do with a task."""

    DENY = 0
    VIEW = 1
    RUN = 2


class AclRule(BaseModel):
    """One `acl.rules` entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: str = "*"
    tasks: tuple[str, ...] = ("*",)
    action: Literal["run", "view", "deny"]
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()


class AclSettings(BaseModel):
    """The `acl` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[AclRule, ...] = Field(default_factory=tuple)


def task_path(task: str, folder: str | None) -> str:
    """What `tasks` globs match: `folder/task`, or `task` without a folder."""
    return f"{folder.strip('/')}/{task}" if folder else task


class Acl:
    """Evaluates the rules (None: no `acl` section, everything allowed)."""

    def __init__(self, rules: Sequence[AclRule] | None) -> None:
        self.rules = None if rules is None else tuple(rules)

    def level(self, user: User | None, workspace: str, task: str,
              folder: str | None = None) -> Level:
        """The level of `user` (None: auth is off) on a task."""
        if user is None or user.is_admin:
            return Level.RUN
        if not may_see_workspace(user.groups, workspace):
            return Level.DENY
        if self.rules is None:
            return Level.RUN
        path = task_path(task, folder)
        best = Level.DENY
        for rule in self.rules:
            if not self._applies(rule, user):
                continue
            if not fnmatchcase(workspace, rule.workspace):
                continue
            if not any(fnmatchcase(path, glob) for glob in rule.tasks):
                continue
            best = max(best, Level[rule.action.upper()])
        return best

    @staticmethod
    def _applies(rule: AclRule, user: User) -> bool:
        if not rule.users and not rule.groups:
            return True
        names = {user.email.lower(), user.user_id}
        return (any(u.lower() in names for u in rule.users)
                or any(g in user.groups for g in rule.groups))
