"""Load test (Locust), its report, and the scripted scenarios of ./demo.sh scenario."""
