"""Control images for the extra ControlNets: canny, pose, depth."""
