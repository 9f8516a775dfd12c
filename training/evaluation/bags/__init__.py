"""rosbag2 tools: a Cityscapes-format folder -> bag, a streaming bag reader, bag evaluation.

- :mod:`training.evaluation.bags.write` (``python -m training.evaluation.bags.write``): camera images
  (``sensor_msgs/Image`` rgb8, or ``CompressedImage`` jpeg / png), ground-truth labelIds (mono8) and traffic-sign
  ground truth (``vision_msgs/Detection2DArray``, :mod:`~training.evaluation.bags.sign_truth`) into a rosbag2
  (sqlite3 or mcap, version 9, ``Stores.ROS2_KILTED``) at a given rate.
- :mod:`training.evaluation.bags.read`: streams camera frames paired with ground truth by header stamp from
  sqlite3 and mcap bags, with errors naming the bag and topic (``BagError``).
- :mod:`training.evaluation.bags.evaluate` (``python -m training.evaluation.bags.evaluate``): offline (engine on every
  frame) or live (the node as a subprocess, the bag played into it over DDS) evaluation with an
  output bag, ``metrics.json`` (:class:`training.evaluation.bags.result.BagResult`) and a report
  (:mod:`training.evaluation.bags.report`); its parts are listed in its docstring.
- :mod:`training.evaluation.bags.node_process`: the node's process as launch/hiseg.launch.py starts
  it, with loopback DDS, for the live evaluation, the node tests and bench/bench_node.py
  (:mod:`training.evaluation.bags.ros_client`: their rclpy side).

Writing, reading and offline evaluation are pure Python on the ``rosbags`` package; no ROS
installation is needed (the live evaluation needs rclpy). The package imports no submodule itself,
so ``python -m training.evaluation.bags.<tool>`` runs cleanly.
"""
