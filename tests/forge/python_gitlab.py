"""Drives the GitLab fake with python-gitlab (a widely used GitLab client) and prints
what it read as one JSON object, for tests/forge/gitlab.rs to check.

Usage: python python_gitlab.py URL TOKEN PROJECT_PATH SOURCE_BRANCH OLD_HEAD
"""

import json
import sys

import gitlab

url, token, path, branch, old_head = sys.argv[1:6]
gl = gitlab.Gitlab(url, private_token=token, per_page=2)
gl.auth()
out = {"user": gl.user.username}

project = gl.projects.get(path)
out["project"] = {"id": project.id, "path": project.path_with_namespace,
                  "squash_option": project.squash_option}

# The bot's open MR on the branch (the lookup autobump makes).
mrs = project.mergerequests.list(state="opened", source_branch=branch, get_all=True)
out["open_mrs"] = [m.iid for m in mrs]
mr = project.mergerequests.get(mrs[0].iid)
out["mr"] = {"iid": mr.iid, "title": mr.title, "labels": mr.labels, "sha": mr.sha,
             "author": mr.author["username"], "state": mr.state,
             "detailed_merge_status": mr.detailed_merge_status,
             "source_branch": mr.source_branch, "target_branch": mr.target_branch}

# Notes, all pages (per_page=2 makes python-gitlab follow the Link header).
notes = mr.notes.list(get_all=True, sort="asc", order_by="created_at")
out["notes"] = [{"author": n.author["username"], "body": n.body, "system": n.system}
                for n in notes]
created = mr.notes.create({"body": "/hold cancel"})
out["created_note"] = {"id": created.id, "body": created.body}

# Labels through the documented update fields.
mr.add_labels = "skip-review"
mr.save()
out["labels_after"] = project.mergerequests.get(mr.iid).labels

# Pipelines and statuses of the head.
out["pipelines"] = [{"id": p.id, "status": p.status, "sha": p.sha}
                    for p in project.pipelines.list(sha=mr.sha, get_all=True)]
out["statuses"] = sorted(
    [{"name": s.name, "status": s.status, "allow_failure": s.allow_failure}
     for s in project.commits.get(mr.sha, lazy=True).statuses.list(get_all=True)],
    key=lambda s: s["name"])

# Users and their project roles.
users = gl.users.list(username="alice")
out["alice"] = project.members_all.get(users[0].id).access_level
try:
    project.members_all.get(999999)
    out["stranger"] = "found"
except gitlab.exceptions.GitlabGetError as e:
    out["stranger"] = e.response_code

# Merging at a head that is not the MR's is refused with 409; at the head it merges.
try:
    mr.merge(sha=old_head)
    out["stale_merge"] = "merged"
except gitlab.exceptions.GitlabMRClosedError as e:
    out["stale_merge"] = e.response_code
mr.merge(sha=mr.sha, squash=True)
merged = project.mergerequests.get(mr.iid)
out["merged"] = {"state": merged.state, "squash_commit_sha": merged.squash_commit_sha}

print(json.dumps(out))
