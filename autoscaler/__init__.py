"""The autoscaler: acts on the shared scaling policy, through one actuator per engine."""
