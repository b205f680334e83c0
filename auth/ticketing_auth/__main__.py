from ticketing_auth.main import main

main()
