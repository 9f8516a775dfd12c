"""hiseg_ros runtime: the semantic hierarchy, the network, inference engines and the ROS 2 node.

Nothing in this package imports ``training`` (the workstation side).
"""
