"""`python -m cract_ros.node`: the tracker node (how cract_ros.process and the tests start it)."""
from cract_ros.node.process_exit import main

if __name__ == "__main__":
    raise SystemExit(main())
