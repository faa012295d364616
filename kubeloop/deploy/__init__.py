"""Deploying registry versions to KServe and moving traffic between them.

- ``inferenceservice``: pure builders of the InferenceService object.
- ``patches``: pure JSON merge patches (set a canary's share, promote, roll back).
- ``kube``: the thin layer that sends them to the Kubernetes API.
- ``verdict``: the pure canary verdict (promote, hold or rollback, with reasons).
- ``analysis``: prediction logs and labels in, the verdict's inputs out.
- ``rollout``: the flows the commands and pipeline steps share (deploy, set,
  promote, rollback, step through a schedule), keeping registry aliases in step.
- ``cmdutil``: flags and output shared by ``kubeloop deploy`` and ``kubeloop canary``.
"""
