"""The resumable jobs of the pipeline, each built from the concept modules."""
