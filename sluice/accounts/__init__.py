"""Accounts (a customer's balance that its keys spend from), groups with price multipliers, redemption
codes and the balance history."""
