"""Reading captures: annotation facts, stories, inspect, and observations as data."""
