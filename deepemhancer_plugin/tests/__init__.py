"""Tests of the Scipion plugin: headless projects run by pytest, unittest or `scipion tests`."""
