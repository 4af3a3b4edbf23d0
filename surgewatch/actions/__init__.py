"""What people do to incidents -- acknowledge, silence, mark a false alarm, run a traffic control --
from the CLI (:mod:`.operator`) or from Slack's buttons (:mod:`.slack_listener`)."""
