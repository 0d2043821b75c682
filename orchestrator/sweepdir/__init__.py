"""The sweep directory: reading it (local or in a bucket), its leaderboard rows, the tokenized data and the cloud mirror."""
