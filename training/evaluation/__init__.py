"""Evaluation: metrics, dataset evaluation of a model, traffic-sign scores, and the rosbag
harness that replays drives through the node."""
