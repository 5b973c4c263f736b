"""The resumable jobs of the pipeline, each built from the concept modules."""

# what a local render worker has loaded before its first task (pipeline.execute's
# start_server imports it in the process the workers are forked from)
WORKER_MODULE = "pipeline.stages.worker"
