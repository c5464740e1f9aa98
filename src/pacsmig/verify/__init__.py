"""Verification: is what the plan promised at the destination?"""
