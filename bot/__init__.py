"""The chat bot: private and group chat, XEP-0050 ad-hoc commands, feed relays.

Start it with :func:`bot.component.start_bot` (``backchannel run`` does).
"""
