"""Unattended operation: the rolling run (``contimg run``) and its parse-time choices.

``window``: which groups a rolling run plans (recent nights, settled files);
``held``: which groups a failure holds back until its cause changes;
``lock``: one rolling run at a time; ``run``: the command itself.
"""
