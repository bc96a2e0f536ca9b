"""The voice service: phone calls over SIP and RTP, into the platform's interactions."""
