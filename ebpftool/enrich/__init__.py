"""What user space adds to the kernel's records: the Kubernetes workload of a process (k8s).

It sits beside the tracers and the export layer and depends on neither: the tracers put its
attributes on their records, and the export layer puts the node's and agent's own on the resource.
"""
