"""Jobs that chain the other packages: the README's main job and the experiments of docs/."""
