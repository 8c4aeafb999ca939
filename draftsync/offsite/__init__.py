"""The offsite copy: every archived video and its sidecar, copied once to an S3-compatible bucket, checked
against the catalog, and restorable into an archive tree from the bucket alone.

`plan` holds the pure decisions (object keys, part plans, what an S3 error means, the per-video state
machine); `store` is the only module that talks to S3 (boto3, imported lazily so that `status`, `scan`
and `--help` never load it); `upload` copies the backlog; `service` hosts it in the daemon; `check` is
`offsite verify` and the scrub's sample; `restore` brings a bucket back into an archive tree.
"""
