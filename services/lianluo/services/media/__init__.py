"""The media service: interactions, participants, media legs, and the message relay."""
