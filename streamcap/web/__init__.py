"""The live web page: LivePage (what it shows) and page.html (how); served by streamcap.http."""
