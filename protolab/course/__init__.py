"""The course around the labs: grading, reference captures, replay, doctor."""
