from ticketing_expiration.main import main

main()
